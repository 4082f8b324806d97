//! The process-wide TLS crypto provider.
//!
//! rustls picks a provider from its crate features only when exactly one is compiled in. The
//! S3 client of the content store brings aws-lc-rs while tonic's TLS uses ring, so a process
//! serving content and TLS has both, and rustls would refuse to choose: the first TLS listener
//! or TLS client would panic. [`install_crypto_provider`] chooses ring (what tonic's TLS was
//! built with) once, before any TLS is set up; every entry point that may build a TLS listener
//! or client calls it.

use std::sync::Once;

/// Makes ring the process's TLS crypto provider. Idempotent; a provider another part of the
/// program installed first is kept.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed, which is what we want anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
