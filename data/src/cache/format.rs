//! The on-disk layout of an image cache file, and its checks. Little endian throughout:
//!
//! ```text
//! 0   magic    8 bytes  "SHVIMGC\0"
//! 8   version  u32      1
//! 12  channels u32      3
//! 16  height   u32
//! 20  width    u32
//! 24  n        u64      number of images
//! 32  names    u64      byte length of the name index
//! 40  pixels   u64      offset of the pixel block (page aligned)
//! 48  reserved to 64
//! 64  name index: n × (u32 length, UTF-8 bytes), in image order
//!     zero padding up to `pixels`
//!     pixel block: n × height × width × channels u8, HWC per image
//! ```
//!
//! The file length must equal `pixels + n·h·w·c` exactly, so a truncated file is caught without
//! reading the pixels. This module only encodes and checks bytes; it does no I/O.

use std::path::Path;

use super::CacheError;

pub(crate) const MAGIC: [u8; 8] = *b"SHVIMGC\0";
pub(crate) const VERSION: u32 = 1;
pub(crate) const CHANNELS: u32 = 3;
pub(crate) const HEADER_LEN: usize = 64;
const PAGE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub n: u64,
    pub height: u32,
    pub width: u32,
    pub names_len: u64,
    pub pixel_offset: u64,
}

impl Header {
    pub(crate) fn image_bytes(&self) -> u64 {
        u64::from(self.height) * u64::from(self.width) * u64::from(CHANNELS)
    }

    /// Expected file length, or `None` when the header's numbers overflow (a corrupt header).
    pub(crate) fn file_len(&self) -> Option<u64> {
        self.n
            .checked_mul(self.image_bytes())?
            .checked_add(self.pixel_offset)
    }
}

/// Header and name index for `names`, padded to the start of the pixel block.
pub(crate) fn encode_prefix(names: &[String], size: u32) -> (Header, Vec<u8>) {
    let mut index = Vec::new();
    for name in names {
        index.extend_from_slice(&(name.len() as u32).to_le_bytes());
        index.extend_from_slice(name.as_bytes());
    }
    let names_len = index.len() as u64;
    let pixel_offset = (HEADER_LEN as u64 + names_len).div_ceil(PAGE) * PAGE;
    let header = Header {
        n: names.len() as u64,
        height: size,
        width: size,
        names_len,
        pixel_offset,
    };
    let mut out = Vec::with_capacity(pixel_offset as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&CHANNELS.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&header.n.to_le_bytes());
    out.extend_from_slice(&names_len.to_le_bytes());
    out.extend_from_slice(&pixel_offset.to_le_bytes());
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(&index);
    out.resize(pixel_offset as usize, 0);
    (header, out)
}

/// Checks `bytes` (the whole file) and returns its header and image names.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<(Header, Vec<String>), CacheError> {
    let corrupt = |reason: String| CacheError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER_LEN {
        return Err(CacheError::WrongLength {
            path: path.to_path_buf(),
            expected: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    if bytes[..8] != MAGIC {
        return Err(CacheError::BadMagic {
            path: path.to_path_buf(),
            found: bytes[..8].to_vec(),
        });
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(CacheError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let channels = u32_at(12);
    if channels != CHANNELS {
        return Err(corrupt(format!(
            "expected {CHANNELS} channels, the header says {channels}"
        )));
    }
    let header = Header {
        height: u32_at(16),
        width: u32_at(20),
        n: u64_at(24),
        names_len: u64_at(32),
        pixel_offset: u64_at(40),
    };
    let expected_offset = (HEADER_LEN as u64)
        .checked_add(header.names_len)
        .map(|e| e.div_ceil(PAGE) * PAGE);
    if expected_offset != Some(header.pixel_offset) {
        return Err(corrupt(format!(
            "pixel block offset {} does not follow a name index of {} bytes",
            header.pixel_offset, header.names_len
        )));
    }
    let expected = header.file_len().ok_or_else(|| {
        corrupt(format!(
            "header sizes overflow: {} images of {}×{}",
            header.n, header.height, header.width
        ))
    })?;
    if bytes.len() as u64 != expected {
        return Err(CacheError::WrongLength {
            path: path.to_path_buf(),
            expected,
            found: bytes.len() as u64,
        });
    }
    let mut names = Vec::with_capacity(header.n.min(1 << 24) as usize);
    let index = &bytes[HEADER_LEN..HEADER_LEN + header.names_len as usize];
    let mut at = 0usize;
    for i in 0..header.n {
        let len = index
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt(format!("name index ends before name {i} of {}", header.n)))?;
        let raw = index
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| corrupt(format!("name index ends inside name {i} of {}", header.n)))?;
        let name =
            std::str::from_utf8(raw).map_err(|_| corrupt(format!("name {i} is not UTF-8")))?;
        names.push(name.to_string());
        at += 4 + len;
    }
    if at != index.len() {
        return Err(corrupt(format!(
            "name index has {} bytes left over after {} names",
            index.len() - at,
            header.n
        )));
    }
    Ok((header, names))
}
