//! Writing blob records: an upload streamed, checked and stored with its variants, and the
//! variants made later for a blob an older version stored without them.

use aloft_core::ContentHash;
use aloft_core::hash::Hasher;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use super::{BlobStore, Encoding, IngestError};
use crate::db::blobs::{self as records, BlobRecord};
use crate::db::{Database, DbError};

impl BlobStore {
    /// Streams an upload to a partial file while hashing it, checks it against `expected`, makes
    /// its brotli and gzip variants (in parallel), stores all of them under its hash and records
    /// it with their sizes. Nothing is visible unless all of that succeeds.
    pub async fn ingest<S, E>(
        &self,
        db: &Database,
        expected: ContentHash,
        mut body: S,
        max: u64,
    ) -> Result<BlobRecord, IngestError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (upload, file) = self.partial("upload")?;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Hasher::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| IngestError::Body(e.to_string()))?;
            if hasher.len() + chunk.len() as u64 > max {
                return Err(IngestError::TooLarge { max });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| self.full(e))?;
        }
        file.flush().await.map_err(|e| self.full(e))?;
        let (actual, md5, size) = hasher.finish();
        if actual != expected {
            return Err(IngestError::Mismatch { expected, actual });
        }
        file.sync_all().await.map_err(|e| self.full(e))?;
        drop(file);

        let variants = self.make_variant_files(&upload.path, size).await?;
        let (br, gz) = variants.sizes();
        self.store_files(&actual, Some(upload), variants).await?;
        records::insert(db, &actual, &md5, size, br, gz).await?;
        Ok(records::get(db, &actual)
            .await?
            .ok_or_else(|| DbError::MissingBlob(actual.to_string()))?)
    }

    /// Makes the brotli and gzip variants of a stored blob that has none yet (a row recorded by
    /// an older version), stores those that save at least 5 % and records the outcome.
    pub async fn make_variants(&self, db: &Database, hash: &ContentHash) -> Result<(), IngestError> {
        let (variants, _copy) = match &self.local_root {
            Some(root) => {
                let src = Self::local_path(root, hash, Encoding::Identity);
                let size = std::fs::metadata(&src)?.len();
                (self.make_variant_files(&src, size).await?, None)
            }
            None => {
                // Compress a local copy: the bucket's bytes are read once, in a stream.
                let (copy, file) = self.partial("download")?;
                let mut file = tokio::fs::File::from_std(file);
                let mut stream = self
                    .store
                    .get(&Self::key(hash, Encoding::Identity))
                    .await?
                    .into_stream();
                let mut size = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    file.write_all(&chunk).await.map_err(|e| self.full(e))?;
                }
                file.flush().await.map_err(|e| self.full(e))?;
                drop(file);
                (self.make_variant_files(&copy.path, size).await?, Some(copy))
            }
        };
        let (br, gz) = variants.sizes();
        self.store_files(hash, None, variants).await?;
        records::set_variants(db, hash, br, gz).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::fixtures::{body, count, read, setup, unbrotli, ungzip};
    use crate::blobs::partial::PARTIAL_DIR;
    use sqlx::Row as _;

    #[tokio::test]
    async fn ingest_verifies_and_stores_with_variants() {
        let (dir, db, blobs) = setup().await;
        let data: &[u8] = b"console.log('hello'); console.log('hello'); console.log('hello');";
        let hash = ContentHash::of(data);
        let rec = blobs
            .ingest(&db, hash, body(&[&data[..10], &data[10..]]), 1 << 20)
            .await
            .unwrap();
        assert_eq!(rec.size, data.len() as u64);
        assert_eq!(rec.md5, aloft_core::Md5Key::of(data));
        // Recorded in one insert with its variants: no window in which it has none.
        assert!(rec.compressed);
        assert_eq!(&read(&blobs, &hash, Encoding::Identity).await[..], data);
        let part = blobs
            .get(&hash, Encoding::Identity, Some(2..5))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&part[..], &data[2..5]);
        let br = read(&blobs, &hash, Encoding::Brotli).await;
        assert_eq!(unbrotli(&br), data);
        assert_eq!(rec.br_size, Some(br.len() as u64));
        let gz = read(&blobs, &hash, Encoding::Gzip).await;
        assert_eq!(ungzip(&gz), data);
        assert_eq!(rec.gz_size, Some(gz.len() as u64));
        // Written by rename: nothing is left in the partial folder, and no staging copy exists.
        assert_eq!(count(dir.path().join("blobs").join(PARTIAL_DIR)), 0);
        assert_eq!(count(dir.path().join("tmp")), 0);
        // The same upload again is accepted and changes nothing.
        let again = blobs.ingest(&db, hash, body(&[data]), 1 << 20).await.unwrap();
        assert_eq!(again, rec);
    }

    #[tokio::test]
    async fn legacy_rows_without_variants_get_them() {
        let (_dir, db, blobs) = setup().await;
        let data = "export default function App() { return null; }\n".repeat(50);
        let hash = ContentHash::of(data.as_bytes());
        blobs
            .ingest(&db, hash, body(&[data.as_bytes()]), 1 << 20)
            .await
            .unwrap();
        // What an older version left: the identity bytes, a row without variants.
        blobs.delete(&hash).await.unwrap();
        let stored = blobs.local_root.clone().unwrap();
        let path = BlobStore::local_path(&stored, &hash, Encoding::Identity);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        sqlx::query("UPDATE blobs SET compressed = 0, br_size = NULL, gz_size = NULL")
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(records::uncompressed(&db).await.unwrap(), vec![hash]);

        blobs.make_variants(&db, &hash).await.unwrap();
        assert!(records::uncompressed(&db).await.unwrap().is_empty());
        let rec = records::get(&db, &hash).await.unwrap().unwrap();
        let br = read(&blobs, &hash, Encoding::Brotli).await;
        assert_eq!(rec.br_size, Some(br.len() as u64));
        assert_eq!(unbrotli(&br), data.as_bytes());
        assert_eq!(ungzip(&read(&blobs, &hash, Encoding::Gzip).await), data.as_bytes());

        // An upload meeting such a row records the variants it made.
        sqlx::query("UPDATE blobs SET compressed = 0, br_size = NULL, gz_size = NULL")
            .execute(db.pool())
            .await
            .unwrap();
        let rec = blobs
            .ingest(&db, hash, body(&[data.as_bytes()]), 1 << 20)
            .await
            .unwrap();
        assert!(rec.compressed);
        assert_eq!(rec.br_size, Some(br.len() as u64));
    }

    #[tokio::test]
    async fn mismatch_and_oversize_leave_nothing() {
        let (dir, db, blobs) = setup().await;
        let claimed = ContentHash::of(b"something else");
        let err = blobs
            .ingest(&db, claimed, body(&[b"actual bytes"]), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::Mismatch { .. }), "{err}");
        let big = ContentHash::of(b"0123456789");
        let err = blobs
            .ingest(&db, big, body(&[b"01234", b"56789"]), 8)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { max: 8 }), "{err}");
        assert!(records::get(&db, &claimed).await.unwrap().is_none());
        assert!(records::get(&db, &big).await.unwrap().is_none());
        assert!(blobs.get(&claimed, Encoding::Identity, None).await.is_err());
        // No stored file and no leftover partial file.
        assert_eq!(count(dir.path().join("blobs")), 1, "only the partial folder");
        assert_eq!(count(dir.path().join("blobs").join(PARTIAL_DIR)), 0);
        assert!(blobs.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_record_is_one_row_with_its_variants() {
        let (_dir, db, blobs) = setup().await;
        let data = "body { color: red }\n".repeat(100);
        let hash = ContentHash::of(data.as_bytes());
        blobs
            .ingest(&db, hash, body(&[data.as_bytes()]), 1 << 20)
            .await
            .unwrap();
        let row = sqlx::query("SELECT compressed, br_size, gz_size FROM blobs")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(row.try_get::<i64, _>("compressed").unwrap(), 1);
        assert!(row.try_get::<Option<i64>, _>("br_size").unwrap().is_some());
        assert!(row.try_get::<Option<i64>, _>("gz_size").unwrap().is_some());
    }
}
