//! A tiny HTTP/1.1 client on `std::net::TcpStream` for the tests.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive connection.
pub struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    pub token: Option<String>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
            token: None,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Read one response (skipping `100 Continue`).
    pub fn read_response(&mut self) -> io::Result<Resp> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                self.reader.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':').expect("header");
                headers.push((n.to_string(), v.trim().to_string()));
            }
            if status == 100 {
                continue;
            }
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body)?;
            return Ok(Resp {
                status,
                headers,
                body,
            });
        }
    }

    /// Send a request with optional JSON body and extra headers.
    pub fn request_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Resp> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                req.push_str("Content-Type: application/json\r\n");
            }
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.send_raw(&bytes)?;
        self.read_response()
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request_with("GET", path, &[], None).expect("GET")
    }

    pub fn post(&mut self, path: &str, body: &Value) -> Resp {
        self.request_with("POST", path, &[], Some(body.to_string().as_bytes()))
            .expect("POST")
    }

    pub fn put(&mut self, path: &str, body: &Value) -> Resp {
        self.request_with("PUT", path, &[], Some(body.to_string().as_bytes()))
            .expect("PUT")
    }

    pub fn patch(&mut self, path: &str, content_type: &str, body: &Value) -> Resp {
        self.request_with(
            "PATCH",
            path,
            &[("Content-Type", content_type)],
            Some(body.to_string().as_bytes()),
        )
        .expect("PATCH")
    }

    pub fn delete(&mut self, path: &str, body: Option<&Value>) -> Resp {
        let b = body.map(|b| b.to_string());
        self.request_with("DELETE", path, &[], b.as_deref().map(str::as_bytes))
            .expect("DELETE")
    }
}

/// Assert `resp` is a `Status` failure with `code` and `reason`.
pub fn assert_status(resp: &Resp, code: u16, reason: &str) -> Value {
    let v = resp.json();
    assert_eq!(resp.status, code, "{v}");
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

pub const IPB: &str = "/apis/plumb.dev/v1alpha1/ipblocks";

pub fn ipblock(name: &str, cidr: &str) -> Value {
    serde_json::json!({
        "apiVersion": "plumb.dev/v1alpha1",
        "kind": "IPBlock",
        "metadata": {"name": name, "labels": {"pool": "default"}},
        "spec": {"cidr": cidr, "node": "node-a"}
    })
}

pub fn pod(ns: &str, name: &str, node: &str, phase: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase}
    })
}

pub fn node(name: &str, labels: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {}
    })
}

pub fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}
