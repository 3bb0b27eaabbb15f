//! TLS: one crypto provider for the whole process (ring, as kube's), which
//! reqwest-based clients need before they are built.

/// Makes ring the process-wide rustls provider; a no-op when one is set.
pub fn install_default_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
