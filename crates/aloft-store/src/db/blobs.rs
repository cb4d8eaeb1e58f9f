//! Blob records: a row exists only once the blob's bytes are verified and stored.

use aloft_core::time::Millis;
use aloft_core::{ContentHash, Md5Key};
use sqlx::Row;

use super::{Conn, Database, DbError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub hash: ContentHash,
    pub md5: Md5Key,
    pub size: u64,
    pub br_size: Option<u64>,
    pub gz_size: Option<u64>,
    /// Variants were made or judged not worth making.
    pub compressed: bool,
}

pub async fn get(db: &Database, hash: &ContentHash) -> Result<Option<BlobRecord>, DbError> {
    let row = sqlx::query("SELECT hash, md5, size, br_size, gz_size, compressed FROM blobs WHERE hash = $1")
        .bind(hash.to_string())
        .fetch_optional(db.pool())
        .await?;
    let Some(r) = row else { return Ok(None) };
    let decode = |e: String| DbError::Sqlx(sqlx::Error::Decode(e.into()));
    let md5: String = r.try_get("md5")?;
    Ok(Some(BlobRecord {
        hash: *hash,
        md5: Md5Key::parse(&md5).map_err(|e| decode(e.to_string()))?,
        size: r.try_get::<i64, _>("size")? as u64,
        br_size: r.try_get::<Option<i64>, _>("br_size")?.map(|s| s as u64),
        gz_size: r.try_get::<Option<i64>, _>("gz_size")?.map(|s| s as u64),
        compressed: r.try_get::<i64, _>("compressed")? != 0,
    }))
}

/// Records a stored blob together with its variants (`br`, `gz`: the sizes of those kept), so a
/// recorded blob always has them. Recording one that exists is a no-op, except that a row left
/// without variants (by an older version) gets these.
pub async fn insert(
    db: &Database,
    hash: &ContentHash,
    md5: &Md5Key,
    size: u64,
    br: Option<u64>,
    gz: Option<u64>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO blobs (hash, md5, size, br_size, gz_size, compressed, created_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $6) \
         ON CONFLICT (hash) DO UPDATE SET br_size = excluded.br_size, gz_size = excluded.gz_size, compressed = 1 \
         WHERE blobs.compressed = 0",
    )
    .bind(hash.to_string())
    .bind(md5.to_string())
    .bind(size as i64)
    .bind(br.map(|s| s as i64))
    .bind(gz.map(|s| s as i64))
    .bind(Millis::now().0)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The subset of `hashes` that has no stored blob. The ones that are stored are touched, so
/// `gc` leaves them alone for a grace period while the publish that asked goes on.
pub async fn missing(db: &Database, hashes: &[ContentHash]) -> Result<Vec<ContentHash>, DbError> {
    let mut out = Vec::new();
    let now = Millis::now().0;
    for hash in hashes {
        let touched = sqlx::query("UPDATE blobs SET created_at = $1 WHERE hash = $2")
            .bind(now)
            .bind(hash.to_string())
            .execute(db.pool())
            .await?;
        if touched.rows_affected() == 0 && !out.contains(hash) {
            out.push(*hash);
        }
    }
    Ok(out)
}

/// Deletes the records of blobs no update, embedded bundle or patch references and nobody touched for `grace`, and returns
/// their hashes; the caller then removes the bytes. A blob that is referenced is never chosen:
/// the check and the delete happen in the caller's write transaction.
pub async fn collect_garbage(conn: &mut Conn, grace_ms: i64) -> Result<Vec<ContentHash>, DbError> {
    let cutoff = Millis::now().0 - grace_ms;
    let rows: Vec<String> = sqlx::query_scalar(
        "DELETE FROM blobs WHERE created_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM update_assets a WHERE a.blob_hash = blobs.hash) \
         AND NOT EXISTS (SELECT 1 FROM embedded_bundles e WHERE e.blob_hash = blobs.hash) \
         AND NOT EXISTS (SELECT 1 FROM patches p WHERE p.patch_hash = blobs.hash) RETURNING hash",
    )
    .bind(cutoff)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().filter_map(|h| ContentHash::parse(h).ok()).collect())
}

pub async fn set_variants(db: &Database, hash: &ContentHash, br: Option<u64>, gz: Option<u64>) -> Result<(), DbError> {
    sqlx::query("UPDATE blobs SET br_size = $1, gz_size = $2, compressed = 1 WHERE hash = $3")
        .bind(br.map(|s| s as i64))
        .bind(gz.map(|s| s as i64))
        .bind(hash.to_string())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Blobs recorded without variants (by versions that compressed after recording); the server
/// makes them in the background until none is left.
pub async fn uncompressed(db: &Database) -> Result<Vec<ContentHash>, DbError> {
    let rows = sqlx::query("SELECT hash FROM blobs WHERE compressed = 0")
        .fetch_all(db.pool())
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>("hash").ok())
        .filter_map(|h| ContentHash::parse(&h).ok())
        .collect())
}
