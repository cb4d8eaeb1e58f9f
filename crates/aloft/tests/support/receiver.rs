//! A webhook receiver for the end-to-end tests, and an independent check of its signatures
//! (the `openssl` command line).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers.
#[derive(Clone, Copy)]
pub enum Answer {
    /// 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// Reads the request and never answers.
    Never,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// A webhook receiver on a loopback port; it records every request it reads.
pub struct Receiver {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorded = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(stream, &recorded, answer));
            }
        });
        Self { url, log }
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `within` for at least `n` requests.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                assert!(
                    got.len() >= n,
                    "the receiver got {} requests, not {n}, within {within:?}",
                    got.len()
                );
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads one request (headers, then `content-length` bytes) and answers it as told.
fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, answer: Answer) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    assert!(
        request_line.starts_with("POST /hook HTTP/1.1"),
        "request line {request_line:?}"
    );
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let n = {
        let mut log = log.lock().unwrap();
        log.push(Received { headers, body });
        log.len()
    };
    let status = match answer {
        Answer::Never => {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        Answer::FailFirst(fails) if n <= fails => "500 Internal Server Error",
        Answer::FailFirst(_) => "200 OK",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );
}

/// The hex HMAC-SHA256 of `body` keyed with `secret`, as the `openssl` command line makes it.
pub fn openssl_hmac(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the openssl command is needed for independent signature checks");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    // `SHA2-256(stdin)= 5bdc...` (older versions: `(stdin)= 5bdc...`)
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit("= ").next().unwrap().to_owned()
}
