//! The brotli and gzip variants of a blob: which blobs are worth compressing, compressing them
//! on blocking threads, and keeping only the variants that save enough.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::partial::Partial;
use super::{BlobStore, Encoding, IngestError};

/// Smallest saving for which a compressed variant is kept.
const MIN_SAVING: f64 = 0.05;

/// The compressed variants of one blob that are worth keeping, as partial files with their sizes.
#[derive(Default)]
pub(super) struct Variants {
    br: Option<(Partial, u64)>,
    gz: Option<(Partial, u64)>,
}

impl Variants {
    pub(super) fn sizes(&self) -> (Option<u64>, Option<u64>) {
        (
            self.br.as_ref().map(|(_, size)| *size),
            self.gz.as_ref().map(|(_, size)| *size),
        )
    }

    pub(super) fn into_files(self) -> impl Iterator<Item = (Encoding, Partial)> {
        [
            self.br.map(|(p, _)| (Encoding::Brotli, p)),
            self.gz.map(|(p, _)| (Encoding::Gzip, p)),
        ]
        .into_iter()
        .flatten()
    }
}

impl BlobStore {
    /// Compresses `src` (of `size` bytes) with brotli and gzip at once, each on a blocking
    /// thread, into partial files; keeps those that save at least 5 %. Already-compressed
    /// formats are not tried, nor is a large file whose first [`SAMPLE`] bytes do not shrink at
    /// all (random or encrypted data): brotli's best quality would spend a minute on it for
    /// nothing, while the client waits.
    pub(super) async fn make_variant_files(&self, src: &Path, size: u64) -> Result<Variants, IngestError> {
        let src_owned = src.to_owned();
        let worth_trying = tokio::task::spawn_blocking(move || {
            let mut head = Vec::with_capacity(SAMPLE);
            std::fs::File::open(&src_owned)?
                .take(SAMPLE as u64)
                .read_to_end(&mut head)?;
            Ok::<_, std::io::Error>(!is_precompressed(&head) && (size <= SAMPLE as u64 || sample_shrinks(&head)))
        })
        .await
        .map_err(|e| IngestError::Io(std::io::Error::other(e)))??;
        if !worth_trying {
            return Ok(Variants::default());
        }
        let (br, gz) = tokio::try_join!(
            self.variant_file(src, size, Encoding::Brotli),
            self.variant_file(src, size, Encoding::Gzip)
        )?;
        Ok(Variants { br, gz })
    }

    async fn variant_file(
        &self,
        src: &Path,
        size: u64,
        encoding: Encoding,
    ) -> Result<Option<(Partial, u64)>, IngestError> {
        let (partial, out) = self.partial(encoding.token().unwrap_or("variant"))?;
        let src = src.to_owned();
        let len = tokio::task::spawn_blocking(move || compress_file(&src, out, encoding))
            .await
            .map_err(|e| IngestError::Io(std::io::Error::other(e)))?
            .map_err(|e| self.full(e))?;
        let worth = (len as f64) < size as f64 * (1.0 - MIN_SAVING);
        Ok(worth.then_some((partial, len)))
    }
}

/// How much of a large file is compressed quickly to see whether compressing all of it can pay.
const SAMPLE: usize = 256 << 10;

/// Whether fast gzip saves at least 1 % on `sample`.
fn sample_shrinks(sample: &[u8]) -> bool {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let out = gz.write_all(sample).and_then(|()| gz.finish());
    out.is_ok_and(|out| (out.len() as f64) < sample.len() as f64 * 0.99)
}

/// Compresses the file at `src` into `out` and syncs it; returns the compressed size.
fn compress_file(src: &Path, out: std::fs::File, encoding: Encoding) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(1 << 16, std::fs::File::open(src)?);
    let mut writer = BufWriter::with_capacity(1 << 16, out);
    match encoding {
        Encoding::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: 11,
                lgwin: 22,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut reader, &mut writer, &params)?;
        }
        Encoding::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(writer, flate2::Compression::best());
            std::io::copy(&mut reader, &mut gz)?;
            writer = gz.finish()?;
        }
        Encoding::Identity => {
            std::io::copy(&mut reader, &mut writer)?;
        }
    }
    writer.flush()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// Formats that do not shrink: PNG, JPEG, GIF, WebP, zip, gzip, brotli-less guesses aside.
fn is_precompressed(bytes: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"\x89PNG",
        b"\xff\xd8\xff",
        b"GIF8",
        b"PK\x03\x04",
        b"\x1f\x8b",
        b"wOF2",
        b"\x00\x00\x00\x1cftyp",
        b"\x00\x00\x00\x20ftyp",
        b"\x00\x00\x00\x18ftyp",
    ];
    MAGIC.iter().any(|m| bytes.starts_with(m)) || (bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::fixtures::{body, setup};
    use crate::blobs::is_storage_full;
    use aloft_core::ContentHash;

    #[tokio::test]
    async fn precompressed_and_incompressible_blobs_have_no_variants() {
        let (_dir, db, blobs) = setup().await;
        let png: &[u8] = b"\x89PNG\r\n\x1a\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let hash = ContentHash::of(png);
        let rec = blobs.ingest(&db, hash, body(&[png]), 1 << 20).await.unwrap();
        assert!(rec.compressed);
        assert_eq!((rec.br_size, rec.gz_size), (None, None));
        assert!(blobs.get(&hash, Encoding::Brotli, None).await.is_err());
        let tiny: &[u8] = b"x";
        let rec = blobs
            .ingest(&db, ContentHash::of(tiny), body(&[tiny]), 1 << 20)
            .await
            .unwrap();
        assert!(rec.compressed);
        assert_eq!((rec.br_size, rec.gz_size), (None, None));
    }

    #[test]
    fn a_full_disk_is_named() {
        // A real ENOSPC: /dev/full refuses every write with it.
        let src = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(src.path(), "let x = 1;\n".repeat(10_000)).unwrap();
        let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
        let err = compress_file(src.path(), full, Encoding::Gzip).unwrap_err();
        assert!(is_storage_full(&err), "{err:?}");
        let err = IngestError::writing(err, Path::new("/srv/aloft/blobs"));
        assert!(
            matches!(&err, IngestError::StorageFull { dir } if dir == Path::new("/srv/aloft/blobs")),
            "{err}"
        );
        let other = IngestError::writing(std::io::Error::other("x"), Path::new("/"));
        assert!(matches!(other, IngestError::Io(_)));
    }

    #[tokio::test]
    async fn large_random_blobs_are_not_compressed() {
        let (_dir, db, blobs) = setup().await;
        let mut random = Vec::new();
        let mut block = ContentHash::of(b"seed").as_bytes().to_vec();
        while random.len() < 2 * SAMPLE {
            block = ContentHash::of(&block).as_bytes().to_vec();
            random.extend_from_slice(&block);
        }
        assert!(!sample_shrinks(&random[..SAMPLE]));
        let rec = blobs
            .ingest(&db, ContentHash::of(&random), body(&[&random]), 1 << 30)
            .await
            .unwrap();
        assert!(rec.compressed);
        assert_eq!((rec.br_size, rec.gz_size), (None, None));
        // A large compressible one is compressed whole.
        let text = "const answer = 42; // the question is unknown\n".repeat(2 * SAMPLE / 40);
        assert!(sample_shrinks(&text.as_bytes()[..SAMPLE]));
        let rec = blobs
            .ingest(&db, ContentHash::of(text.as_bytes()), body(&[text.as_bytes()]), 1 << 30)
            .await
            .unwrap();
        assert!(rec.br_size.unwrap() < text.len() as u64 / 10);
    }

    #[test]
    fn sniffs_compressed_media() {
        assert!(is_precompressed(b"\x89PNG\r\n\x1a\n"));
        assert!(is_precompressed(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!is_precompressed(b"\xc6\x1f\xbc\x03\xc1\x03\x19\x1f"));
    }
}
