//! The SQLite and PostgreSQL migration histories are kept in step by hand; this test keeps them
//! from drifting. It migrates a fresh database of each kind and compares what the engines report
//! about the result: tables, columns (type family and nullability), primary keys, indexes (columns
//! in order with their direction, uniqueness, partial predicate) and foreign keys.
//!
//! Each schema is described as a set of lines, so a failure lists exactly the lines that only one
//! engine has. Needs PostgreSQL: skipped, with a message, only outside CI.
//!
//! Accepted differences, each named where it is applied:
//!
//! - `SQLITE_PRIMARY_KEY_NOT_NULL`: SQLite lets a primary-key column that is not `INTEGER PRIMARY
//!   KEY` hold NULL (a documented legacy quirk) unless it is also declared NOT NULL, and reports
//!   every primary-key column as nullable; PostgreSQL makes them all NOT NULL. Aloft's keys are
//!   hashes, ids and names it always writes, and changing this on SQLite would mean rebuilding the
//!   tables, so primary-key columns count as NOT NULL on both sides.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

use std::collections::BTreeSet;

use aloft_store::Database;
use aloft_store::testing::Backend;
use sqlx::Row;

/// Tables that are the migration tool's own bookkeeping, not Aloft's schema.
const IGNORED_TABLES: &[&str] = &["_sqlx_migrations"];

/// The type family of a SQLite declared type, by SQLite's own affinity rules (datatype3.html §3.1).
fn sqlite_family(declared: &str) -> String {
    let t = declared.to_ascii_uppercase();
    let family = if t.contains("INT") {
        "integer"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "text"
    } else if t.contains("BLOB") || t.is_empty() {
        "bytes"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "real"
    } else {
        "numeric"
    };
    family.to_owned()
}

/// The type family of a PostgreSQL type (`information_schema.columns.data_type`). A type with no
/// SQLite counterpart keeps its own name, so it shows up as a difference.
fn postgres_family(data_type: &str) -> String {
    match data_type {
        "smallint" | "integer" | "bigint" => "integer",
        "text" | "character varying" | "character" => "text",
        "bytea" => "bytes",
        "real" | "double precision" => "real",
        "numeric" => "numeric",
        other => other,
    }
    .to_owned()
}

fn nullability(not_null: bool) -> &'static str {
    if not_null { "NOT NULL" } else { "NULL" }
}

/// A partial index's predicate, without the parentheses and spacing each engine adds.
fn predicate(text: &str) -> String {
    let text: String = text.chars().filter(|c| *c != '(' && *c != ')').collect();
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// One index as a line. Indexes made for a constraint (UNIQUE, PRIMARY KEY) have engine-chosen
/// names, so only indexes made by `CREATE INDEX` are compared by name.
fn index_line(table: &str, name: Option<&str>, unique: bool, columns: &str, predicate_text: &str) -> String {
    let mut line = format!("index {table} ({columns})");
    if unique {
        line.push_str(" unique");
    }
    if let Some(name) = name {
        line.push_str(&format!(" named {name}"));
    }
    if !predicate_text.is_empty() {
        line.push_str(&format!(" where {}", predicate(predicate_text)));
    }
    line
}

async fn sqlite_schema(path: &std::path::Path) -> BTreeSet<String> {
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the migrated SQLite file");
    let mut lines = BTreeSet::new();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .fetch_all(&pool)
            .await
            .unwrap();
    for table in tables.iter().filter(|t| !IGNORED_TABLES.contains(&t.as_str())) {
        lines.insert(format!("table {table}"));

        let columns = sqlx::query(r#"SELECT name, type, "notnull", pk FROM pragma_table_info(?1) ORDER BY pk, cid"#)
            .bind(table)
            .fetch_all(&pool)
            .await
            .unwrap();
        let mut primary_key = Vec::new();
        for c in &columns {
            let name: String = c.get("name");
            let pk: i64 = c.get("pk");
            if pk > 0 {
                primary_key.push(name.clone());
            }
            // SQLITE_PRIMARY_KEY_NOT_NULL (see the top of this file).
            let not_null = c.get::<i64, _>("notnull") != 0 || pk > 0;
            let family = sqlite_family(&c.get::<String, _>("type"));
            lines.insert(format!("column {table}.{name} {family} {}", nullability(not_null)));
        }
        if !primary_key.is_empty() {
            lines.insert(format!("primary key {table} ({})", primary_key.join(", ")));
        }

        let indexes = sqlx::query(r#"SELECT name, "unique", origin, partial FROM pragma_index_list(?1)"#)
            .bind(table)
            .fetch_all(&pool)
            .await
            .unwrap();
        for i in &indexes {
            let name: String = i.get("name");
            let origin: String = i.get("origin");
            if origin == "pk" {
                continue; // described by the primary key line
            }
            let keys = sqlx::query(r#"SELECT name, "desc" FROM pragma_index_xinfo(?1) WHERE "key" = 1 ORDER BY seqno"#)
                .bind(&name)
                .fetch_all(&pool)
                .await
                .unwrap();
            let columns: Vec<String> = keys
                .iter()
                .map(|k| {
                    let column: Option<String> = k.get("name");
                    let column = column.unwrap_or_else(|| "<expression>".to_owned());
                    if k.get::<i64, _>("desc") != 0 {
                        format!("{column} DESC")
                    } else {
                        column
                    }
                })
                .collect();
            let mut where_clause = String::new();
            if i.get::<i64, _>("partial") != 0 {
                let sql: String =
                    sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?1")
                        .bind(&name)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                let at = sql
                    .to_ascii_uppercase()
                    .rfind(" WHERE ")
                    .expect("a partial index has a WHERE");
                where_clause = sql[at + " WHERE ".len()..].to_owned();
            }
            let made_by_create_index = origin == "c";
            lines.insert(index_line(
                table,
                made_by_create_index.then_some(name.as_str()),
                i.get::<i64, _>("unique") != 0,
                &columns.join(", "),
                &where_clause,
            ));
        }

        let foreign_keys =
            sqlx::query(r#"SELECT id, "table", "from", "to" FROM pragma_foreign_key_list(?1) ORDER BY id, seq"#)
                .bind(table)
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut by_id: std::collections::BTreeMap<i64, (String, Vec<String>, Vec<String>)> = Default::default();
        for f in &foreign_keys {
            let entry = by_id.entry(f.get("id")).or_default();
            entry.0 = f.get("table");
            entry.1.push(f.get("from"));
            // `to` is NULL when the reference names no columns (the parent's primary key);
            // Aloft's migrations always name them.
            entry.2.push(f.get::<Option<String>, _>("to").unwrap_or_default());
        }
        for (parent, from, to) in by_id.into_values() {
            lines.insert(format!(
                "foreign key {table} ({}) references {parent} ({})",
                from.join(", "),
                to.join(", ")
            ));
        }
    }
    pool.close().await;
    lines
}

async fn postgres_schema(url: &str) -> BTreeSet<String> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("connect to the migrated PostgreSQL database");
    let mut lines = BTreeSet::new();
    let ignored = |t: &str| IGNORED_TABLES.contains(&t);

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in tables.iter().filter(|t| !ignored(t)) {
        lines.insert(format!("table {table}"));
    }

    let columns = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, is_nullable::text AS nullable
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for c in &columns {
        let table: String = c.get("t");
        if ignored(&table) || !tables.contains(&table) {
            continue;
        }
        let name: String = c.get("c");
        let not_null = c.get::<String, _>("nullable") == "NO";
        let family = postgres_family(&c.get::<String, _>("ty"));
        lines.insert(format!("column {table}.{name} {family} {}", nullability(not_null)));
    }

    let indexes = sqlx::query(
        "SELECT t.relname::text AS t, c.relname::text AS name, ix.indisunique AS is_unique,
                ix.indisprimary AS is_primary,
                COALESCE(pg_get_expr(ix.indpred, ix.indrelid), '') AS predicate,
                EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = ix.indexrelid) AS for_constraint,
                (SELECT string_agg(pg_get_indexdef(ix.indexrelid, k, true)
                                   || CASE WHEN pg_index_column_has_property(ix.indexrelid, k, 'desc')
                                           THEN ' DESC' ELSE '' END,
                                   ', ' ORDER BY k)
                 FROM generate_series(1, ix.indnkeyatts) AS k) AS columns
         FROM pg_index ix
         JOIN pg_class c ON c.oid = ix.indexrelid
         JOIN pg_class t ON t.oid = ix.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = current_schema()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for i in &indexes {
        let table: String = i.get("t");
        if ignored(&table) {
            continue;
        }
        let columns: String = i.get("columns");
        if i.get::<bool, _>("is_primary") {
            lines.insert(format!("primary key {table} ({columns})"));
            continue;
        }
        let name: String = i.get("name");
        let made_by_create_index = !i.get::<bool, _>("for_constraint");
        lines.insert(index_line(
            &table,
            made_by_create_index.then_some(name.as_str()),
            i.get("is_unique"),
            &columns,
            &i.get::<String, _>("predicate"),
        ));
    }

    let foreign_keys = sqlx::query(
        "SELECT child.relname::text AS t, parent.relname::text AS parent,
                (SELECT string_agg(a.attname::text, ', ' ORDER BY k.n)
                 FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS from_columns,
                (SELECT string_agg(a.attname::text, ', ' ORDER BY k.n)
                 FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS to_columns
         FROM pg_constraint con
         JOIN pg_class child ON child.oid = con.conrelid
         JOIN pg_class parent ON parent.oid = con.confrelid
         JOIN pg_namespace n ON n.oid = child.relnamespace
         WHERE con.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for f in &foreign_keys {
        let table: String = f.get("t");
        lines.insert(format!(
            "foreign key {table} ({}) references {} ({})",
            f.get::<String, _>("from_columns"),
            f.get::<String, _>("parent"),
            f.get::<String, _>("to_columns"),
        ));
    }
    pool.close().await;
    lines
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_make_the_same_schema() {
    let Some(backend) = Backend::require_postgres_s3("sqlite_and_postgres_migrations_make_the_same_schema") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    let sqlite_path = dir.path().join("aloft.db");
    Database::open_sqlite(&sqlite_path).await.expect("migrate SQLite");
    let sqlite = sqlite_schema(&sqlite_path).await;

    let postgres_url = backend.fresh_database_url(dir.path());
    Database::connect(&postgres_url, 2).await.expect("migrate PostgreSQL");
    let postgres = postgres_schema(&postgres_url).await;

    // Guard against a comparison of two empty descriptions.
    for table in ["apps", "updates", "blobs", "idempotency_keys"] {
        assert!(
            sqlite.contains(&format!("table {table}")),
            "SQLite schema misread: {sqlite:#?}"
        );
    }

    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the migrations of crates/aloft-store/migrations/sqlite and /postgres have drifted; add a \
         migration on the wrong side (never edit an applied one).\nonly on SQLite: {only_sqlite:#?}\nonly on \
         PostgreSQL: {only_postgres:#?}"
    );
}
