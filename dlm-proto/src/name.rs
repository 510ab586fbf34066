//! Resource and lockspace names, validated when constructed.

use core::fmt;
use core::hash::{Hash, Hasher};

use crate::error::Errno;

/// The longest resource name: `DLM_RESNAME_MAXLEN`.
pub const RESNAME_MAXLEN: usize = dlm_sys::DLM_RESNAME_MAXLEN as usize;
/// The longest lockspace name: `DLM_LOCKSPACE_LEN`.
pub const LOCKSPACE_LEN: usize = dlm_sys::DLM_LOCKSPACE_LEN as usize;

/// Up to 64 bytes stored inline, so names never allocate.
#[derive(Clone, Copy)]
struct Inline {
    len: u8,
    bytes: [u8; RESNAME_MAXLEN],
}

impl Inline {
    fn new(src: &[u8]) -> Inline {
        debug_assert!(src.len() <= RESNAME_MAXLEN);
        let mut bytes = [0u8; RESNAME_MAXLEN];
        bytes[..src.len()].copy_from_slice(src);
        Inline {
            len: src.len() as u8,
            bytes,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl ResourceName {
    /// The name zero-padded to 64 bytes, and its length: a fixed-size copy
    /// for the request encoder.
    #[inline]
    pub fn padded(&self) -> (&[u8; RESNAME_MAXLEN], usize) {
        (&self.0.bytes, usize::from(self.0.len))
    }
}

/// Write bytes as text, escaping what is not printable ASCII as `\xNN`.
fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

macro_rules! name_impls {
    ($t:ident) => {
        impl $t {
            /// The name's bytes.
            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }

            /// The name's length in bytes.
            pub fn len(&self) -> usize {
                usize::from(self.0.len)
            }

            /// Whether the name is empty.
            pub fn is_empty(&self) -> bool {
                self.0.len == 0
            }
        }

        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.as_bytes() == other.as_bytes()
            }
        }

        impl Eq for $t {}

        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.as_bytes().hash(state)
            }
        }

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $t {
            fn cmp(&self, other: &Self) -> core::cmp::Ordering {
                self.as_bytes().cmp(other.as_bytes())
            }
        }

        impl AsRef<[u8]> for $t {
            fn as_ref(&self) -> &[u8] {
                self.as_bytes()
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_escaped(f, self.as_bytes())
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(\"", stringify!($t))?;
                write_escaped(f, self.as_bytes())?;
                f.write_str("\")")
            }
        }

        impl TryFrom<&str> for $t {
            type Error = Errno;

            fn try_from(s: &str) -> Result<Self, Errno> {
                $t::new(s.as_bytes())
            }
        }

        impl TryFrom<&[u8]> for $t {
            type Error = Errno;

            fn try_from(s: &[u8]) -> Result<Self, Errno> {
                $t::new(s)
            }
        }

        impl core::str::FromStr for $t {
            type Err = Errno;

            fn from_str(s: &str) -> Result<Self, Errno> {
                $t::new(s.as_bytes())
            }
        }
    };
}

/// A resource name: 0 to 64 arbitrary bytes (`DLM_RESNAME_MAXLEN`).
///
/// Resource names are binary: NUL and any other byte are allowed, and two
/// names are equal only if their bytes and lengths are.
#[derive(Clone, Copy)]
pub struct ResourceName(Inline);

impl ResourceName {
    /// Validate and copy a resource name. Longer than 64 bytes is `EINVAL`,
    /// as the kernel's `set_lock_args` answers.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<ResourceName, Errno> {
        let bytes = bytes.as_ref();
        if bytes.len() > RESNAME_MAXLEN {
            return Err(Errno::EINVAL);
        }
        Ok(ResourceName(Inline::new(bytes)))
    }
}

name_impls!(ResourceName);

/// A lockspace name: 1 to 64 bytes, with no NUL and no `/`.
///
/// The kernel names the lockspace's device `dlm_<name>`, so a `/` would
/// escape `/dev`, and a NUL would end the C string early.
#[derive(Clone, Copy)]
pub struct LockspaceName(Inline);

impl LockspaceName {
    /// Validate and copy a lockspace name; a bad one is `EINVAL`.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<LockspaceName, Errno> {
        let bytes = bytes.as_ref();
        if bytes.is_empty() || bytes.len() > LOCKSPACE_LEN {
            return Err(Errno::EINVAL);
        }
        if bytes.iter().any(|&b| b == 0 || b == b'/') {
            return Err(Errno::EINVAL);
        }
        Ok(LockspaceName(Inline::new(bytes)))
    }

    /// The name as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// The misc device name the kernel gives this lockspace: `dlm_<name>`.
    pub fn device_name(&self) -> Vec<u8> {
        let mut v = b"dlm_".to_vec();
        v.extend_from_slice(self.as_bytes());
        v
    }
}

name_impls!(LockspaceName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_binary_safe_and_bounded() {
        let n = ResourceName::new(b"a\0b").unwrap();
        assert_eq!(n.as_bytes(), b"a\0b");
        assert_ne!(n, ResourceName::new(b"a\0").unwrap());
        assert!(ResourceName::new([7u8; 64]).is_ok());
        assert_eq!(ResourceName::new([7u8; 65]).err(), Some(Errno::EINVAL));
        assert!(ResourceName::new(b"").unwrap().is_empty());
        assert_eq!(format!("{n}"), "a\\x00b");
    }

    #[test]
    fn lockspace_names_reject_nul_slash_and_bad_lengths() {
        assert!(LockspaceName::new("default").is_ok());
        assert_eq!(LockspaceName::new("").err(), Some(Errno::EINVAL));
        assert_eq!(LockspaceName::new("a/b").err(), Some(Errno::EINVAL));
        assert_eq!(LockspaceName::new(b"a\0b").err(), Some(Errno::EINVAL));
        assert!(LockspaceName::new("x".repeat(64)).is_ok());
        assert_eq!(
            LockspaceName::new("x".repeat(65)).err(),
            Some(Errno::EINVAL)
        );
        let n: LockspaceName = "vg1".parse().unwrap();
        assert_eq!(n.device_name(), b"dlm_vg1");
        assert_eq!(n.as_str(), Some("vg1"));
    }
}
