//! The limit relay: the least work any SFU must do per forwarded packet,
//! as a yardstick for callgate (docs/benchmarks.md). It speaks enough of
//! callgate's signaling protocol for `callgate loadtest` to join, answers
//! ICE-lite checks and runs the DTLS handshake (webrtc-rs `rtc`'s STUN and
//! DTLS crates), and then, per packet: one SRTP decrypt, one header rewrite
//! and SRTP encrypt per subscriber (`rtc`'s SRTP crate), batched syscalls
//! (recvmmsg, sendmmsg), on one thread. No interceptors, no NACK cache, no
//! RTCP, no congestion control: a floor, not a server.
//!
//!     cargo bench --bench limit_relay -- --http-port 7890 --udp-port 7892
//!
//! Prints `limit-relay ready http=… media=… pid=…` when it listens; serves
//! `/rtc` (signaling) and `/metrics` (callgate's packet counters) on HTTP.
//! Loopback only.

mod control;
mod media;
mod mmsg;
mod stun;

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use callgate_signaling::token::KeyRing;
use rtc::crypto::SignatureScheme;
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let http_port: u16 = arg(&args, "--http-port", "7890")
        .parse()
        .expect("--http-port N");
    let udp_port: u16 = arg(&args, "--udp-port", "7892")
        .parse()
        .expect("--udp-port N");
    let key = arg(&args, "--api-key", "devkey");
    let secret = arg(&args, "--api-secret", "secret");
    let loopback = Ipv4Addr::LOCALHOST;

    let provider = rtc::crypto::default_provider().expect("a crypto provider");
    let certificate = RTCCertificate::generate(
        provider.crypto(),
        SignatureScheme::EcdsaP256Sha256,
        CertificateParams::new(vec!["limit-relay".to_owned()]).expect("certificate params"),
    )
    .expect("a certificate");
    // As rtc's DTLS transport configures it; the peer's certificate is not
    // checked against its SDP fingerprint (a yardstick, not a server).
    let dtls = |client: bool| {
        ConfigBuilder::default()
            .with_crypto_provider(provider.clone())
            .with_certificates(vec![certificate.dtls_certificate.clone()])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(client, None)
            .map(Arc::new)
            .expect("a DTLS config")
    };
    let (dtls_server, dtls_client) = (dtls(false), dtls(true));

    let socket = UdpSocket::bind(SocketAddr::from((loopback, udp_port))).expect("media port");
    let media_addr = socket.local_addr().expect("bound");
    let counters = Arc::new(media::Counters::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let media_counters = counters.clone();
    let media_provider = provider.clone();
    std::thread::Builder::new()
        .name("relay-media".into())
        .spawn(move || {
            media::run(
                socket,
                media_provider,
                dtls_server,
                dtls_client,
                rx,
                media_counters,
            )
        })
        .expect("media thread");

    let relay = Arc::new(control::Relay {
        keys: KeyRing::new([(key.as_str(), secret.as_str())]),
        media_addr,
        certificate,
        media: Mutex::new(tx),
        counters,
        rooms: Mutex::new(HashMap::new()),
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(SocketAddr::from((loopback, http_port)))
                .await
                .expect("http port");
            println!(
                "limit-relay ready http={} media={media_addr} pid={}",
                listener.local_addr().expect("bound"),
                std::process::id()
            );
            let _ = std::io::stdout().flush();
            axum::serve(listener, control::router(relay))
                .await
                .expect("http server");
        });
}
