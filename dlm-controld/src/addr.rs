//! The local node's address as configfs `comms/<nodeid>/addr` takes it: a
//! raw `struct sockaddr_storage`, exactly 128 bytes, in a single `write()`
//! (the kernel's `comm_addr_store` rejects any other length with `EINVAL`).

use std::net::IpAddr;

/// `sizeof(struct sockaddr_storage)`.
pub const SOCKADDR_STORAGE_SIZE: usize = 128;

/// `addr` as a `struct sockaddr_storage` with port 0 (the DLM uses its own
/// `tcp_port`, 21064 by default): `sockaddr_in` or `sockaddr_in6`, zero
/// padded to 128 bytes. `sa_family` is in host byte order, the rest in
/// network byte order, as the C structs lay them out.
pub fn sockaddr_storage(addr: IpAddr) -> [u8; SOCKADDR_STORAGE_SIZE] {
    let mut b = [0u8; SOCKADDR_STORAGE_SIZE];
    match addr {
        IpAddr::V4(v4) => {
            // struct sockaddr_in { sa_family_t; in_port_t; struct in_addr; }
            b[..2].copy_from_slice(&rustix::net::AddressFamily::INET.as_raw().to_ne_bytes());
            b[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            // struct sockaddr_in6 { family; port; flowinfo; in6_addr; scope_id; }
            b[..2].copy_from_slice(&rustix::net::AddressFamily::INET6.as_raw().to_ne_bytes());
            b[8..24].copy_from_slice(&v6.octets());
        }
    }
    b
}

/// Whether configfs `comms/<nodeid>/addr_list` (lines such as
/// `AF_INET<TAB>127.0.0.1`) lists `addr`.
pub fn addr_list_contains(addr_list: &str, addr: IpAddr) -> bool {
    addr_list.lines().any(|line| {
        line.split('\t')
            .nth(1)
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
            == Some(addr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn loopback_v4_is_the_documented_128_bytes() {
        let b = sockaddr_storage(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut want = [0u8; 128];
        want[..2].copy_from_slice(&2u16.to_ne_bytes()); // AF_INET
        want[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(b, want);
        if cfg!(target_endian = "little") {
            assert_eq!(&b[..8], &[2, 0, 0, 0, 0x7f, 0, 0, 1]);
        }
    }

    #[test]
    fn v6_address_sits_at_offset_8() {
        let b = sockaddr_storage(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 10); // AF_INET6
        assert_eq!(&b[8..24], &Ipv6Addr::LOCALHOST.octets());
        assert!(b[24..].iter().all(|&x| x == 0));
    }

    #[test]
    fn addr_list_is_parsed() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(addr_list_contains("AF_INET\t127.0.0.1\n", lo));
        assert!(!addr_list_contains("AF_INET\t10.0.0.1\n", lo));
        assert!(!addr_list_contains("", lo));
        let v6 = "AF_INET6\t0000:0000:0000:0000:0000:0000:0000:0001\n";
        assert!(addr_list_contains(v6, IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
}
