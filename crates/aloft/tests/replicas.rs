//! Several `aloft serve` processes sharing one PostgreSQL database and one S3 bucket, as
//! replicas behind a load balancer: a change made through any replica is served by all of them
//! within a second, a replica killed mid-publish leaves a whole state, and a replica cut off from
//! the database keeps serving devices and says it is degraded. Needs the servers `.ci/services`
//! starts; outside CI the tests are skipped (with a message) when they are not configured.

#![allow(clippy::unwrap_used)] // tests fail loudly on the first surprise

mod support;

use std::time::{Duration, Instant};

use aloft_store::testing::Backend;
use serde_json::Value;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const RV: &str = "1.0.0";

/// Two replicas on one fresh database and bucket prefix, with an admin token and app `demo`.
struct Cluster {
    dir: tempfile::TempDir,
    a: Server,
    b: Server,
    token: String,
    backend_args: Vec<String>,
}

impl Cluster {
    fn start(test: &str) -> Option<Self> {
        let backend = Backend::require_postgres_s3(test)?;
        let dir = tempfile::tempdir().unwrap();
        let location = backend.fresh(&dir.path().join("shared"));
        let backend_args = location.serve_args();
        let mut token_args = vec!["tokens".to_owned(), "create".to_owned()];
        token_args.extend(location.token_args());
        let token_args: Vec<&str> = token_args.iter().map(String::as_str).collect();
        let token = aloft_ok(&token_args).trim().to_owned();
        let a = Server::start_on(&dir.path().join("a"), "127.0.0.1:0", backend_args.clone());
        let b = Server::start_on(&dir.path().join("b"), "127.0.0.1:0", backend_args.clone());
        aloft_ok(&["apps", "create", "demo", "--server", &a.base, "--token", &token]);
        Some(Self {
            dir,
            a,
            b,
            token,
            backend_args,
        })
    }

    /// Waits until B knows the app created through A (at most a second).
    async fn settled(self) -> Self {
        let start = Instant::now();
        loop {
            let reply = get(&self.b.manifest_url("demo"), &headers()).await;
            if reply.status == 204 {
                return self;
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "B does not know the app: {}",
                reply.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn publish(&self, via: &Server, tag: &str) -> Value {
        publish_json(&via.base, &self.token, &make_export(self.dir.path(), tag, RV))
    }
}

fn headers() -> Vec<(String, String)> {
    without(device_headers("ios", RV, "production"), "expo-expect-signature")
}

/// The manifest a replica serves to an iOS device, if any.
async fn served(server: &Server) -> Option<Value> {
    let reply = get(&server.manifest_url("demo"), &headers()).await;
    match reply.status {
        204 => None,
        200 => {
            let parts = parse_multipart(reply.header("content-type").unwrap(), &reply.body);
            Some(serde_json::from_slice(&parts[0].body).unwrap())
        }
        other => panic!("unexpected status {other}: {}", String::from_utf8_lossy(&reply.body)),
    }
}

/// How long until `server` serves update `id` (panics after 5 s).
async fn time_until_served(server: &Server, id: &str) -> Duration {
    let start = Instant::now();
    loop {
        if served(server).await.is_some_and(|m| m["id"] == id) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{id} never reached {}",
            server.base
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_assets_whole(server: &Server, manifest: &Value) {
    for asset in std::iter::once(&manifest["launchAsset"]).chain(manifest["assets"].as_array().unwrap()) {
        // The asset URL names the replica that published; fetch the same path from this one.
        let url = asset["url"].as_str().unwrap();
        let path = &url[url.find("/assets/").unwrap()..];
        let reply = get(&format!("{}{path}", server.base), &[]).await;
        assert_eq!(reply.status, 200, "{path} on {}", server.base);
        assert_eq!(sha256_b64url(&reply.body), asset["hash"].as_str().unwrap());
    }
}

#[tokio::test]
async fn a_change_through_one_replica_is_served_by_the_other_within_a_second() {
    let Some(cluster) = Cluster::start("a_change_through_one_replica_is_served_by_the_other_within_a_second") else {
        return;
    };
    // An app created through A is known to B within a second.
    let cluster = cluster.settled().await;

    let first = cluster.publish(&cluster.a, "one");
    let id = ios_id(&first);
    let waited = time_until_served(&cluster.b, &id).await;
    assert!(waited < Duration::from_secs(1), "B served the publish after {waited:?}");
    eprintln!("publish through A served by B after {waited:?}");
    let manifest = served(&cluster.b).await.unwrap();
    assert_assets_whole(&cluster.b, &manifest).await;

    // A rollback through B is served by A.
    let second = cluster.publish(&cluster.a, "two");
    time_until_served(&cluster.b, &ios_id(&second)).await;
    let out = aloft_ok(&[
        "rollback",
        "--channel",
        "production",
        "--server",
        &cluster.b.base,
        "--token",
        &cluster.token,
        "--app",
        "demo",
        "--json",
    ]);
    let rollback: Value = serde_json::from_str(&out).unwrap();
    let rolled = ios_id(&rollback["published"]);
    let waited = time_until_served(&cluster.a, &rolled).await;
    assert!(
        waited < Duration::from_secs(1),
        "A served the rollback after {waited:?}"
    );
    let on_a = served(&cluster.a).await.unwrap();
    assert_eq!(
        on_a["launchAsset"]["hash"], manifest["launchAsset"]["hash"],
        "rolled back to the first update"
    );
}

#[tokio::test]
async fn a_replica_killed_mid_publish_leaves_the_other_serving_a_whole_state() {
    let Some(cluster) = Cluster::start("a_replica_killed_mid_publish_leaves_the_other_serving_a_whole_state") else {
        return;
    };
    let cluster = cluster.settled().await;
    let first = cluster.publish(&cluster.a, "before");
    let first_id = ios_id(&first);
    time_until_served(&cluster.b, &first_id).await;

    // Upload the new files through A, start a large upload, and kill A before anything commits.
    let export = make_export(cluster.dir.path(), "after", RV);
    let meta: Value = serde_json::from_slice(&std::fs::read(export.join("metadata.json")).unwrap()).unwrap();
    let bundle = std::fs::read(export.join(meta["fileMetadata"]["ios"]["bundle"].as_str().unwrap())).unwrap();
    let client = reqwest::Client::new();
    let reply = client
        .put(format!("{}/api/v1/blobs/{}", cluster.a.base, sha256_b64url(&bundle)))
        .bearer_auth(&cluster.token)
        .body(bundle)
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success());
    let big = bytes_of("half an upload", 3 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let upload = tokio::spawn(
        client
            .put(format!("{}/api/v1/blobs/{}", cluster.a.base, sha256_b64url(&big)))
            .bearer_auth(&cluster.token)
            .header("content-length", big.len())
            .body(reqwest::Body::wrap_stream(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            )))
            .send(),
    );
    tx.send(Ok(big[..1 << 20].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Cluster {
        dir,
        a,
        b,
        token,
        backend_args,
    } = cluster;
    a.kill();
    drop(tx);
    assert!(upload.await.unwrap().map_or(true, |r| !r.status().is_success()));

    // B still serves the first update, whole.
    let manifest = served(&b).await.unwrap();
    assert_eq!(manifest["id"], first_id.as_str());
    assert_assets_whole(&b, &manifest).await;
    let missing: Value = client
        .post(format!("{}/api/v1/blobs/missing", b.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"hashes": [sha256_b64url(&big)]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        missing["missing"].as_array().unwrap().len(),
        1,
        "half an upload is not a stored blob"
    );

    // And B takes the next publish.
    let cluster = Cluster {
        dir,
        a: Server::start_on(
            &tempfile::tempdir().unwrap().keep(),
            "127.0.0.1:0",
            backend_args.clone(),
        ),
        b,
        token,
        backend_args,
    };
    let next = cluster.publish(&cluster.b, "after");
    assert_eq!(served(&cluster.b).await.unwrap()["id"], ios_id(&next).as_str());
    time_until_served(&cluster.a, &ios_id(&next)).await;
}

/// A TCP forwarder to PostgreSQL that the test can cut, to play a lost database.
struct Cuttable {
    port: u16,
    target: String,
    accept: JoinHandle<()>,
    links: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Cuttable {
    async fn to(target: String) -> Self {
        Self::on("127.0.0.1:0", target).await
    }

    /// The database comes back, on the same address.
    async fn restore(self) -> Self {
        Self::on(&format!("127.0.0.1:{}", self.port), self.target).await
    }

    async fn on(addr: &str, target: String) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let forward_to = target.clone();
        let links: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Default::default();
        let held = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = forward_to.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(link);
            }
        });
        Self {
            port,
            target,
            accept,
            links,
        }
    }

    /// Stops accepting and drops every open connection.
    fn cut(&self) {
        self.accept.abort();
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

// Multi-threaded: the forwarder must run while the test blocks on the CLI and the server start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_its_database_keeps_serving_and_reports_degraded() {
    let Some(backend) =
        Backend::require_postgres_s3("a_replica_without_its_database_keeps_serving_and_reports_degraded")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let location = backend.fresh(&dir.path().join("shared"));
    let url = location.database_url.clone().unwrap();
    // postgres://user@host:port/db → route host:port through the forwarder.
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let (host_port, db) = rest.split_once('/').unwrap();
    let proxy = Cuttable::to(host_port.to_owned()).await;
    let proxied = format!("{scheme_user}@127.0.0.1:{}/{db}", proxy.port);
    let mut args = location.serve_args();
    let i = args.iter().position(|a| a == "--database-url").unwrap();
    args[i + 1] = proxied;
    let token = aloft_ok(&["tokens", "create", "--database-url", &url])
        .trim()
        .to_owned();
    let server = Server::start_on(&dir.path().join("r"), "127.0.0.1:0", args);
    aloft_ok(&["apps", "create", "demo", "--server", &server.base, "--token", &token]);
    let export = make_export(dir.path(), "db-down", RV);
    let id = ios_id(&publish_json(&server.base, &token, &export));
    assert_eq!(get(&format!("{}/readyz", server.base), &[]).await.status, 200);

    proxy.cut();
    // Devices are still served, assets included.
    let manifest = served(&server).await.unwrap();
    assert_eq!(manifest["id"], id.as_str());
    assert_assets_whole(&server, &manifest).await;
    let reply = get(&format!("{}/readyz", server.base), &[]).await;
    assert_eq!(reply.status, 503);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["status"], "degraded");
    // Publishing fails with a clear error.
    let failed = aloft(&publish_args(&server.base, &token, "production", &export));
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("database_unavailable") || err.contains("503"), "{err}");

    // The database comes back: the lost connections are replaced, not fatal.
    let _proxy = proxy.restore().await;
    let start = std::time::Instant::now();
    while get(&format!("{}/readyz", server.base), &[]).await.status != 200 {
        assert!(start.elapsed() < Duration::from_secs(15), "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = make_export(dir.path(), "db-back", RV);
    let next = ios_id(&publish_json(&server.base, &token, &again));
    assert_eq!(served(&server).await.unwrap()["id"], next.as_str());
}

/// Devices check, install and report through either replica: the insights of both are merged
/// exactly, and the rollout they push past its policy halts once, whichever replica weighs it
/// first.
#[tokio::test]
async fn insights_of_both_replicas_merge_and_a_rollout_halts_once() {
    use futures::future::join_all;
    use support::fleet::Device;

    let Some(cluster) = Cluster::start("insights_of_both_replicas_merge_and_a_rollout_halts_once") else {
        return;
    };
    let cluster = cluster.settled().await;
    let first = cluster.publish(&cluster.a, "replica-insights-1");
    let u1 = update_id(&first, "ios");
    let export = make_export(cluster.dir.path(), "replica-insights-2", RV);
    let mut args = publish_args(&cluster.a.base, &cluster.token, "production", &export);
    args.extend([
        "--json",
        "--rollout-percentage",
        "50",
        "--halt-on-failure-rate",
        "20",
        "--halt-min-devices",
        "30",
    ]);
    let second: Value = serde_json::from_str(&aloft_ok(&args)).unwrap();
    let (u2, group2) = (
        update_id(&second, "ios"),
        second["group_id"].as_str().unwrap().to_owned(),
    );
    // B serves the rollout too once it polled the revision (every 200 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bases = [cluster.a.base.clone(), cluster.b.base.clone()];
    let (u1_ref, u2_ref) = (u1.as_str(), u2.as_str());

    // Each device checks through one replica and installs through the other.
    let rolled: Vec<(usize, Value)> = join_all((0..160).map(|i| {
        let bases = bases.clone();
        async move {
            let device = Device {
                signed: false,
                ..Device::new(i, u1_ref)
            };
            let manifest = device.check(&bases[i % 2]).await?;
            device.install(&manifest).await;
            Some((i, manifest))
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    assert!(rolled.len() >= 40, "{} devices in the rollout", rolled.len());
    assert!(rolled.iter().all(|(_, m)| m["id"].as_str().unwrap() == u2));
    // A third fail (reported through A), the rest launch it (reported through B).
    let failing = rolled.len() / 3;
    join_all(rolled.iter().enumerate().map(|(n, (i, _))| {
        let bases = bases.clone();
        async move {
            let fail = n < failing;
            let mut device = Device {
                signed: false,
                ..Device::new(*i, if fail { u1_ref } else { u2_ref })
            };
            if fail {
                device.failed = vec![u2_ref];
            }
            let _ = device.check(&bases[usize::from(!fail)]).await;
        }
    }))
    .await;

    let start = Instant::now();
    let status = loop {
        let status: Value = serde_json::from_str(&aloft_ok(&[
            "rollout",
            "status",
            &group2,
            "--server",
            &cluster.b.base,
            "--token",
            &cluster.token,
            "--app",
            "demo",
            "--json",
        ]))
        .unwrap();
        if status["state"] == "halted" {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not halted: {status:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ios = status["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == "ios")
        .unwrap();
    // Installs went through both replicas; each device is counted once.
    assert_eq!(ios["installs"].as_u64().unwrap(), rolled.len() as u64, "{status:#}");
    assert_eq!(ios["failures"].as_u64().unwrap(), failing as u64);
    assert_eq!(ios["launches"].as_u64().unwrap(), (rolled.len() - failing) as u64);

    // Both replicas weigh every two seconds; give them several passes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let audit: Value = serde_json::from_str(&aloft_ok(&[
        "audit",
        "--server",
        &cluster.a.base,
        "--token",
        &cluster.token,
        "--app",
        "demo",
        "--json",
    ]))
    .unwrap();
    let halts = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rollout.halt")
        .count();
    assert_eq!(halts, 1, "{audit:#}");
}
