//! `stackhive tls init`: a private CA with a coordinator certificate and a worker (client)
//! certificate, for trying TLS and mutual TLS on a rack without a site PKI. Production sites
//! would rather issue these from their own CA; the coordinator only reads PEM files. The same
//! generator makes the certificates of the TLS tests and of `bench queue --secure`. Keys are
//! ECDSA P-256; certificates last one year.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Folder to write ca.pem, server.pem, server.key, client.pem and client.key into (the CA's
    /// key, ca.key, too: keep it offline).
    #[arg(long, default_value = "stackhive-tls")]
    pub out: PathBuf,

    /// Names and addresses the coordinator is reached at (repeat for several).
    #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub hosts: Vec<String>,
}

/// PEM text of a CA and the certificates it signed.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

/// Generates a CA named `ca_name`, a server certificate for `hosts` and a client certificate.
pub fn generate(ca_name: &str, hosts: &[String]) -> anyhow::Result<Bundle> {
    let now = time::OffsetDateTime::now_utc();
    let year = time::Duration::days(365);
    let dn = |name: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn
    };

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = dn(ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + year;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let leaf = |cn: &str, sans: Vec<String>, purpose: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name = dn(cn);
        p.extended_key_usages = vec![purpose];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + year;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        anyhow::Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        "stackhive coordinator",
        hosts.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_cert, client_key) = leaf(
        "stackhive worker",
        vec!["stackhive-worker".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

impl Bundle {
    /// Writes the files into `dir` (keys readable by their owner only).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text, secret) in [
            ("ca.pem", &self.ca_cert, false),
            ("ca.key", &self.ca_key, true),
            ("server.pem", &self.server_cert, false),
            ("server.key", &self.server_key, true),
            ("client.pem", &self.client_cert, false),
            ("client.key", &self.client_key, true),
        ] {
            let path = dir.join(name);
            // Written beside and renamed: a coordinator reloading never reads half a file.
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            if secret {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            }
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

pub fn run(args: &TlsArgs) -> anyhow::Result<()> {
    let bundle = generate("stackhive CA", &args.hosts)?;
    bundle.write(&args.out)?;
    let d = args.out.display();
    outln!("wrote {d}/ca.pem, server.pem, server.key, client.pem, client.key (and ca.key)");
    outln!("coordinator: --tls-cert {d}/server.pem --tls-key {d}/server.key [--tls-client-ca {d}/ca.pem]");
    outln!("clients:     --coordinator https://HOST:50051 --tls-ca {d}/ca.pem");
    outln!("workers:     … --client-cert {d}/client.pem --client-key {d}/client.key");
    Ok(())
}
