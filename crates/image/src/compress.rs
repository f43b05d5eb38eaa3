//! Compression of layer and archive streams, detected by magic number.

use std::io::{self, BufRead, BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for a tar compressed this way.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => crate::media::OCI_LAYER,
            Compression::Gzip => crate::media::OCI_LAYER_GZIP,
            Compression::Zstd => crate::media::OCI_LAYER_ZSTD,
        }
    }
}

/// Looks at the first bytes of `r` without consuming them.
pub fn detect(r: &mut impl BufRead) -> io::Result<Compression> {
    let head = r.fill_buf()?;
    Ok(match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [b'B', b'Z', b'h', ..] | [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bzip2 and xz streams are not supported; use plain tar, gzip or zstd",
            ))
        }
        _ => Compression::None,
    })
}

/// A reader of the decompressed stream.
pub fn decompress<'a>(r: impl Read + 'a) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let c = detect(&mut r)?;
    let out: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(r),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::stream::read::Decoder::with_buffer(r)?,
        )),
    };
    Ok((c, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_decompresses() {
        let data = b"hello tar".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&data[..], 1).unwrap();
        for (input, kind) in [
            (data.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zs, Compression::Zstd),
        ] {
            let (c, mut r) = decompress(&input[..]).unwrap();
            assert_eq!(c, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
        assert!(decompress(&b"BZh91AY"[..]).is_err());
    }
}
