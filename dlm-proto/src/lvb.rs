//! The lock value block.

use core::fmt;

/// The value-block length the kernel uses for userspace lockspaces:
/// `DLM_USER_LVB_LEN`.
pub const USER_LVB_LEN: usize = dlm_sys::DLM_USER_LVB_LEN as usize;

/// A lock value block (LVB): `N` bytes that travel with a resource.
///
/// Userspace lockspaces on the kernel always use 32 bytes, the default.
/// Any other length must be a non-zero multiple of 8, which the kernel
/// requires of in-kernel lockspaces; other lengths fail to compile.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueBlock<const N: usize = USER_LVB_LEN>([u8; N]);

impl<const N: usize> ValueBlock<N> {
    const LEN_OK: () = assert!(
        N > 0 && N % 8 == 0,
        "a value block is a non-zero multiple of 8 bytes"
    );

    /// The block's length in bytes.
    pub const LEN: usize = N;

    /// An all-zero value block.
    pub const fn zeroed() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::LEN_OK;
        ValueBlock([0; N])
    }

    /// A value block holding these bytes.
    pub const fn new(bytes: [u8; N]) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::LEN_OK;
        ValueBlock(bytes)
    }

    /// Copy from a slice that must be exactly `N` bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; N] = bytes.try_into().ok()?;
        Some(Self::new(arr))
    }

    /// Copy `bytes` in, truncating or zero-padding to `N` bytes.
    pub fn from_prefix(bytes: &[u8]) -> Self {
        let mut v = Self::zeroed();
        let n = bytes.len().min(N);
        v.0[..n].copy_from_slice(&bytes[..n]);
        v
    }

    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// The bytes, mutably.
    pub fn as_bytes_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }

    /// Whether every byte is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl<const N: usize> Default for ValueBlock<N> {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl<const N: usize> fmt::Debug for ValueBlock<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueBlock(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl<const N: usize> From<[u8; N]> for ValueBlock<N> {
    fn from(bytes: [u8; N]) -> Self {
        Self::new(bytes)
    }
}

impl<const N: usize> AsRef<[u8]> for ValueBlock<N> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_length_is_the_kernel_user_lvb() {
        assert_eq!(ValueBlock::<32>::LEN, 32);
        assert_eq!(USER_LVB_LEN, 32);
        let v: ValueBlock = ValueBlock::from_prefix(b"abc");
        assert_eq!(&v.as_bytes()[..4], b"abc\0");
        assert!(ValueBlock::<32>::from_slice(&[1; 31]).is_none());
        assert!(ValueBlock::<32>::zeroed().is_zero());
    }

    #[test]
    fn other_multiples_of_eight_work() {
        let v = ValueBlock::<64>::from_prefix(&[9; 70]);
        assert_eq!(v.as_bytes().len(), 64);
        let w = ValueBlock::<8>::new([1; 8]);
        assert!(!w.is_zero());
    }
}
