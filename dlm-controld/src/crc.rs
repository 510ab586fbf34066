//! The global lockspace id: CRC-32 of `"dlm:ls:<name>"` and its NUL.
//!
//! dlm_controld names each lockspace's corosync group `dlm:ls:<name>` and
//! derives the lockspace's global id (written to `/sys/kernel/dlm/<ls>/id`)
//! from it with `cpgname_to_crc(name, strlen(name) + 1)`: the table-driven,
//! reflected CRC-32 (polynomial 0xEDB88320) with initial value 0xFFFFFFFF
//! and the result inverted, the same function as `crc32_le(~0, ..) ^ ~0` in
//! the kernel and `zlib.crc32`. We compute the same id, so a lockspace has
//! the id it would have under dlm_controld.

/// The 256-entry table of the reflected CRC-32, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Feed `data` into a running CRC register (not inverted).
fn update(mut reg: u32, data: &[u8]) -> u32 {
    for &b in data {
        reg = TABLE[((reg ^ u32::from(b)) & 0xff) as usize] ^ (reg >> 8);
    }
    reg
}

/// CRC-32 as dlm_controld's `cpgname_to_crc` computes it (= `zlib.crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    !update(0xFFFF_FFFF, data)
}

/// The global id dlm_controld gives lockspace `name`:
/// `crc32("dlm:ls:" + name + "\0")`.
pub fn lockspace_global_id(name: &[u8]) -> u32 {
    let reg = update(0xFFFF_FFFF, b"dlm:ls:");
    let reg = update(reg, name);
    !update(reg, &[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        // The CRC-32 catalogue's check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn table_starts_and_ends_as_the_published_one() {
        assert_eq!(&TABLE[..4], &[0, 0x7707_3096, 0xEE0E_612C, 0x9909_51BA]);
        assert_eq!(TABLE[255], 0x2D02_EF8D);
    }

    #[test]
    fn lockspace_ids_match_zlib() {
        // Computed independently with Python: zlib.crc32(b"dlm:ls:smoke\x00").
        assert_eq!(lockspace_global_id(b"smoke"), 0x4F35_9037);
        assert_eq!(lockspace_global_id(b"test"), 0x7722_2027);
        assert_eq!(lockspace_global_id(b"lvm_global"), 0x12AA_BD2D);
        assert_eq!(lockspace_global_id(b"test"), crc32(b"dlm:ls:test\0"));
    }
}
