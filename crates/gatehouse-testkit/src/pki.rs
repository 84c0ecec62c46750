//! Test certificates made with the real `openssl` command: a CA, server and client
//! certificates signed by it (RSA, ECDSA P-256/P-384, Ed25519), and deliberately broken
//! material (expired, chain out of order, key of another certificate).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Key algorithms for test certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048.
    Rsa,
    /// ECDSA P-256.
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

/// A certificate and its key, as PEM text, with the files they are in.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM certificate (leaf only).
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM chain: leaf then the issuing CA.
    pub chain: String,
    /// File holding `cert`.
    pub cert_file: PathBuf,
    /// File holding `key`.
    pub key_file: PathBuf,
}

/// A certificate authority in a directory.
pub struct Pki {
    dir: PathBuf,
    name: String,
    /// The CA certificate (PEM).
    pub ca: String,
    /// File holding `ca`.
    pub ca_file: PathBuf,
    serial: std::cell::Cell<u32>,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn genkey(kind: KeyKind, file: &str, dir: &Path) {
    match kind {
        KeyKind::Rsa => openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                file,
            ],
            dir,
        ),
        KeyKind::P256 | KeyKind::P384 => {
            let curve = if kind == KeyKind::P256 {
                "ec_paramgen_curve:P-256"
            } else {
                "ec_paramgen_curve:P-384"
            };
            openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    curve,
                    "-out",
                    file,
                ],
                dir,
            )
        }
        KeyKind::Ed25519 => openssl(&["genpkey", "-algorithm", "ED25519", "-out", file], dir),
    }
}

impl Pki {
    /// A new CA (ECDSA P-256) named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let key = format!("{name}-ca.key");
        let cert = format!("{name}-ca.pem");
        genkey(KeyKind::P256, &key, dir);
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-out",
                &cert,
                "-days",
                "30",
                "-subj",
                &format!("/CN={name} test CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir,
        );
        let ca_file = dir.join(&cert);
        Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca: std::fs::read_to_string(&ca_file).expect("ca"),
            ca_file,
            serial: std::cell::Cell::new(1),
        }
    }

    fn issue_inner(
        &self,
        cn: &str,
        sans: &[&str],
        kind: KeyKind,
        client: bool,
        dates: Option<(&str, &str)>,
    ) -> Issued {
        let n = self.serial.get();
        self.serial.set(n + 1);
        let base = format!("{}-{n}", self.name);
        let (key, csr, cert, ext) = (
            format!("{base}.key"),
            format!("{base}.csr"),
            format!("{base}.pem"),
            format!("{base}.ext"),
        );
        genkey(kind, &key, &self.dir);
        openssl(
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
            &self.dir,
        );
        let mut extv = String::from("basicConstraints=CA:FALSE\n");
        if client {
            extv.push_str("extendedKeyUsage=clientAuth\n");
        } else {
            extv.push_str("extendedKeyUsage=serverAuth\n");
        }
        if !sans.is_empty() {
            let list: Vec<String> = sans
                .iter()
                .map(|s| {
                    if s.parse::<std::net::IpAddr>().is_ok() {
                        format!("IP:{s}")
                    } else if s.contains('@') {
                        format!("email:{s}")
                    } else {
                        format!("DNS:{s}")
                    }
                })
                .collect();
            extv.push_str(&format!("subjectAltName={}\n", list.join(",")));
        }
        std::fs::write(self.dir.join(&ext), extv).expect("ext");
        match dates {
            None => openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{}-ca.pem", self.name),
                    "-CAkey",
                    &format!("{}-ca.key", self.name),
                    "-set_serial",
                    &n.to_string(),
                    "-days",
                    "10",
                    "-out",
                    &cert,
                    "-extfile",
                    &ext,
                ],
                &self.dir,
            ),
            Some((start, end)) => {
                // `openssl ca` is the command that takes explicit dates.
                let db = format!("{base}.db");
                std::fs::write(self.dir.join(&db), "").expect("db");
                let conf = format!(
                    "[ca]\ndefault_ca=c\n[c]\ndatabase={db}\nnew_certs_dir=.\nserial={base}.srl\ndefault_md=sha256\npolicy=p\ncopy_extensions=none\n[p]\ncommonName=supplied\n"
                );
                std::fs::write(
                    self.dir.join(format!("{base}.srl")),
                    format!("{:04X}\n", n + 1000),
                )
                .expect("srl");
                std::fs::write(self.dir.join(format!("{base}.cnf")), conf).expect("cnf");
                openssl(
                    &[
                        "ca",
                        "-batch",
                        "-config",
                        &format!("{base}.cnf"),
                        "-in",
                        &csr,
                        "-cert",
                        &format!("{}-ca.pem", self.name),
                        "-keyfile",
                        &format!("{}-ca.key", self.name),
                        "-startdate",
                        start,
                        "-enddate",
                        end,
                        "-out",
                        &cert,
                        "-extfile",
                        &ext,
                        "-notext",
                    ],
                    &self.dir,
                );
            }
        }
        let cert_pem = std::fs::read_to_string(self.dir.join(&cert)).expect("cert");
        Issued {
            chain: format!("{cert_pem}{}", self.ca),
            cert: cert_pem,
            key: std::fs::read_to_string(self.dir.join(&key)).expect("key"),
            cert_file: self.dir.join(&cert),
            key_file: self.dir.join(&key),
        }
    }

    /// A server certificate for `names` (the first is the CN).
    pub fn server(&self, names: &[&str], kind: KeyKind) -> Issued {
        self.issue_inner(names[0], names, kind, false, None)
    }

    /// A client certificate with common name `cn` and optional extra names.
    pub fn client(&self, cn: &str, sans: &[&str]) -> Issued {
        self.issue_inner(cn, sans, KeyKind::P256, true, None)
    }

    /// A server certificate that expired (valid in January 2020 only).
    pub fn expired(&self, name: &str) -> Issued {
        self.issue_inner(
            name,
            &[name],
            KeyKind::P256,
            false,
            Some(("20200101000000Z", "20200201000000Z")),
        )
    }
}

/// Indents PEM text for a YAML block scalar at `spaces`.
pub fn yaml_block(pem: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    pem.trim()
        .lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
