//! Throwaway certificates and keys for a local control plane: a CA, the
//! apiserver's serving certificate, etcd's certificate (which it serves and
//! peers with) and the apiserver's client certificate for etcd, and the
//! service-account signing key, and the apiserver's client certificate for
//! kubelets.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM-encoded material for one control plane.
pub struct Pki {
    /// The CA that signed the serving certificate; clients trust it.
    pub ca_cert: String,
    /// The apiserver's serving certificate, for loopback and in-cluster names.
    pub serving_cert: String,
    /// The serving certificate's private key.
    pub serving_key: String,
    /// etcd's certificate, for serving clients and its peer port.
    pub etcd_cert: String,
    /// Its private key.
    pub etcd_key: String,
    /// The apiserver's client certificate for etcd: with client-certificate
    /// auth on, no other local user can read or write the cluster's data.
    pub etcd_client_cert: String,
    /// Its private key.
    pub etcd_client_key: String,
    /// The apiserver's client certificate for kubelets, which serve only
    /// clients with a certificate from the plane's CA.
    pub kubelet_client_cert: String,
    /// Its private key.
    pub kubelet_client_key: String,
    /// The key that signs service-account tokens.
    pub service_account_key: String,
    /// Its public half, which verifies them.
    pub service_account_public_key: String,
}

impl Pki {
    /// Generates fresh ECDSA P-256 keys and certificates.
    pub fn generate() -> Result<Self, rcgen::Error> {
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "smolpaws local control plane CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

        let mut serving = CertificateParams::new(
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                // The `kubernetes` Service's address in the plane's
                // service range, which in-cluster clients dial.
                "10.96.0.1",
            ]
            .map(String::from)
            .to_vec(),
        )?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let mut etcd =
            CertificateParams::new(["localhost", "127.0.0.1"].map(String::from).to_vec())?;
        etcd.distinguished_name.push(DnType::CommonName, "etcd");
        // Its peer port presents it as a client too.
        etcd.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let etcd_key = KeyPair::generate()?;
        let etcd_cert = etcd.signed_by(&etcd_key, &ca)?;

        let (client_cert, client_key) = client_certificate("kube-apiserver-etcd-client", &ca)?;
        let (kubelet_client_cert, kubelet_client_key) =
            client_certificate("kube-apiserver-kubelet-client", &ca)?;

        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca_cert: ca.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            etcd_cert: etcd_cert.pem(),
            etcd_key: etcd_key.serialize_pem(),
            etcd_client_cert: client_cert,
            etcd_client_key: client_key,
            kubelet_client_cert,
            kubelet_client_key,
            service_account_key: service_account.serialize_pem(),
            service_account_public_key: service_account.public_key_pem(),
        })
    }
}

/// A client certificate for `name` signed by `ca`, and its key (PEM).
fn client_certificate(
    name: &str,
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> Result<(String, String), rcgen::Error> {
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name.push(DnType::CommonName, name);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = client.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}
