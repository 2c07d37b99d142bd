//! Checks a client's SDP (a publisher offer or a subscriber answer) before
//! `rtc` applies it. `rtc` changes the transport's signaling state before it
//! has read the whole description, so a description it refuses half-way
//! would leave the transport unable to take the next one; and it accepts
//! some descriptions the DTLS handshake can never complete with. Everything
//! refused here is refused with `invalid_sdp` and changes nothing.
//!
//! The rules (docs/protocol.md, "SDP the server accepts"):
//! - DTLS: at least one `a=fingerprint`, every one `sha-256` with 32
//!   colon-separated hex octets, all the same (the only algorithm `rtc`
//!   verifies a certificate with).
//! - ICE: every m-line in use has `a=ice-ufrag` (4–256 ice-chars) and
//!   `a=ice-pwd` (22–256 ice-chars), its own or the session's (RFC 8839).
//! - `a=extmap` ids are 1–14, or 1–255 with `a=extmap-allow-mixed` (RFC 8285).
//! - `a=candidate` lines are well-formed with an IP address. Candidates with
//!   an mDNS name (`*.local`, which browsers use to hide local addresses) are
//!   removed rather than refused: the server is ICE-lite and learns the
//!   client's address from its checks, so it never needs them.
//! - At most [`MAX_MEDIA_SECTIONS`] m-lines.

use std::io::Cursor;
use std::net::IpAddr;

use rtc::sdp::description::common::Attribute;
use rtc::sdp::description::session::SessionDescription;

use crate::session::SfuError;

/// More m-lines than any client has a use for (each is a track).
pub(crate) const MAX_MEDIA_SECTIONS: usize = 64;

const SHA256_OCTETS: usize = 32;

fn invalid(message: impl Into<String>) -> SfuError {
    SfuError::InvalidSdp(message.into())
}

/// Checks `sdp` and returns the description to hand to `rtc`: the same
/// text, less the candidates it has no use for.
pub(crate) fn check_remote(sdp: &str) -> Result<String, SfuError> {
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| invalid(format!("unreadable: {e}")))?;
    if parsed.media_descriptions.len() > MAX_MEDIA_SECTIONS {
        return Err(invalid(format!(
            "more than {MAX_MEDIA_SECTIONS} media sections"
        )));
    }
    check_fingerprints(&parsed)?;
    let session_allow_mixed = has(&parsed.attributes, "extmap-allow-mixed");
    let session_ufrag = value(&parsed.attributes, "ice-ufrag");
    let session_pwd = value(&parsed.attributes, "ice-pwd");
    let mut mdns_candidates = false;
    for (index, media) in parsed.media_descriptions.iter().enumerate() {
        let in_use = media.media_name.port.value != 0;
        let ufrag = value(&media.attributes, "ice-ufrag").or(session_ufrag);
        let pwd = value(&media.attributes, "ice-pwd").or(session_pwd);
        if in_use {
            check_ice_credential("ice-ufrag", ufrag, 4, index)?;
            check_ice_credential("ice-pwd", pwd, 22, index)?;
        }
        let allow_mixed = session_allow_mixed || has(&media.attributes, "extmap-allow-mixed");
        for a in &media.attributes {
            match a.key.as_str() {
                "extmap" => check_extmap(a.value.as_deref().unwrap_or(""), allow_mixed, index)?,
                "candidate"
                    if candidate_address(a.value.as_deref().unwrap_or(""), index)?.is_none() =>
                {
                    mdns_candidates = true;
                }
                _ => {}
            }
        }
    }
    for a in &parsed.attributes {
        if a.key == "extmap" {
            check_extmap(a.value.as_deref().unwrap_or(""), session_allow_mixed, 0)?;
        }
    }
    if !mdns_candidates {
        return Ok(sdp.to_owned());
    }
    // Drop the mDNS candidate lines; every other line stays as it came.
    let kept: Vec<&str> = sdp
        .split_inclusive('\n')
        .filter(|line| {
            let line = line.trim_end();
            !(line.starts_with("a=candidate:")
                && matches!(candidate_address(&line["a=".len()..], 0), Ok(None)))
        })
        .collect();
    Ok(kept.concat())
}

fn has(attributes: &[Attribute], key: &str) -> bool {
    attributes.iter().any(|a| a.key == key)
}

fn value<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_deref())
}

fn check_fingerprints(parsed: &SessionDescription) -> Result<(), SfuError> {
    let all: Vec<&str> = parsed
        .attributes
        .iter()
        .chain(parsed.media_descriptions.iter().flat_map(|m| &m.attributes))
        .filter(|a| a.key == "fingerprint")
        .map(|a| a.value.as_deref().unwrap_or(""))
        .collect();
    let Some(first) = all.first() else {
        return Err(invalid("no DTLS fingerprint"));
    };
    for fingerprint in &all {
        check_fingerprint(fingerprint)?;
    }
    if all
        .iter()
        .any(|f| !f.trim().eq_ignore_ascii_case(first.trim()))
    {
        return Err(invalid("conflicting DTLS fingerprints"));
    }
    Ok(())
}

/// `sha-256 AB:CD:…` (RFC 8122 §5), with exactly 32 octets.
fn check_fingerprint(fingerprint: &str) -> Result<(), SfuError> {
    let (algorithm, hex) = fingerprint
        .trim()
        .split_once(' ')
        .ok_or_else(|| invalid("a DTLS fingerprint needs an algorithm and a value"))?;
    if !algorithm.eq_ignore_ascii_case("sha-256") {
        let shown: String = algorithm.chars().take(16).collect();
        return Err(invalid(format!(
            "DTLS fingerprint algorithm `{shown}` is not supported (sha-256 is)"
        )));
    }
    let octets: Vec<&str> = hex.trim().split(':').collect();
    let well_formed = octets.len() == SHA256_OCTETS
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(invalid(format!(
            "a sha-256 DTLS fingerprint is {SHA256_OCTETS} hex octets separated by colons"
        )));
    }
    Ok(())
}

/// RFC 8839 §5.4: ice-char is ALPHA / DIGIT / "+" / "/".
fn check_ice_credential(
    name: &str,
    value: Option<&str>,
    min: usize,
    media: usize,
) -> Result<(), SfuError> {
    let value = value.ok_or_else(|| invalid(format!("m-line {media} has no {name}")))?;
    let ice_chars = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !(min..=256).contains(&value.len()) || !ice_chars {
        return Err(invalid(format!(
            "{name} of m-line {media} must be {min}..=256 ice-chars"
        )));
    }
    Ok(())
}

/// `<id>[/<direction>] <uri> [<attributes>]`.
fn check_extmap(value: &str, allow_mixed: bool, media: usize) -> Result<(), SfuError> {
    let first = value.split_whitespace().next().unwrap_or("");
    let id = first.split('/').next().unwrap_or("");
    let max = if allow_mixed { 255 } else { 14 };
    match id.parse::<u16>() {
        Ok(id) if (1..=max).contains(&id) => Ok(()),
        _ => Err(invalid(format!(
            "extmap id `{}` of m-line {media} is not 1..={max}",
            id.chars().take(8).collect::<String>()
        ))),
    }
}

/// The address of a candidate attribute's value
/// (`<foundation> <component> <transport> <priority> <address> <port> typ <type> …`):
/// `Some` for an IP address, `None` for an mDNS name, an error otherwise.
fn candidate_address(value: &str, media: usize) -> Result<Option<IpAddr>, SfuError> {
    let value = value.strip_prefix("candidate:").unwrap_or(value);
    let fields: Vec<&str> = value.split_whitespace().collect();
    let malformed = || invalid(format!("malformed candidate in m-line {media}"));
    if fields.len() < 8 || fields[6] != "typ" {
        return Err(malformed());
    }
    fields[1].parse::<u16>().map_err(|_| malformed())?;
    fields[3].parse::<u32>().map_err(|_| malformed())?;
    fields[5].parse::<u16>().map_err(|_| malformed())?;
    if let Ok(ip) = fields[4].parse::<IpAddr>() {
        return Ok(Some(ip));
    }
    if is_mdns_name(fields[4]) {
        return Ok(None);
    }
    Err(invalid(format!(
        "candidate address in m-line {media} must be an IP address or an mDNS name"
    )))
}

/// A `<uuid>.local` name as browsers use for host candidates.
fn is_mdns_name(name: &str) -> bool {
    name.strip_suffix(".local").is_some_and(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";

    fn offer(extra_session: &str, extra_media: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{extra_session}\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
             a=sendonly\r\na=rtpmap:111 opus/48000/2\r\n{extra_media}"
        )
    }

    fn good_media() -> String {
        format!(
            "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=fingerprint:{FP}\r\n\
             a=setup:actpass\r\n"
        )
    }

    fn refused(sdp: &str) -> String {
        match check_remote(sdp) {
            Err(SfuError::InvalidSdp(m)) => m,
            other => panic!("expected invalid_sdp, got {other:?} for\n{sdp}"),
        }
    }

    #[test]
    fn accepts_a_well_formed_offer_unchanged() {
        let sdp = offer("", &good_media());
        assert_eq!(check_remote(&sdp).unwrap(), sdp);
        // Session-level credentials and fingerprint serve every m-line.
        let sdp = offer(
            &format!(
                "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=fingerprint:{FP}\r\n"
            ),
            "",
        );
        assert_eq!(check_remote(&sdp).unwrap(), sdp);
    }

    #[test]
    fn refuses_bad_fingerprints() {
        let with = |fp: &str| {
            offer(
                "",
                &format!(
                    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\na=fingerprint:{fp}\r\n"
                ),
            )
        };
        assert!(
            refused(&offer(
                "",
                "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
            ))
            .contains("no DTLS fingerprint")
        );
        assert!(refused(&with("md5 00:11")).contains("not supported"));
        assert!(refused(&with("sha-3000 00:11")).contains("not supported"));
        assert!(refused(&with("sha-256 ZZ:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08")).contains("hex octets"));
        assert!(refused(&with("sha-256 7B:8B")).contains("hex octets"));
        let absurd = format!("sha-256 {}", vec!["AB"; 5000].join(":"));
        assert!(refused(&with(&absurd)).contains("hex octets"));
        assert!(refused(&with("sha-256")).contains("algorithm and a value"));
        let other = FP.replace("7B:8B", "7B:8C");
        let conflicting = offer(&format!("a=fingerprint:{other}\r\n"), &good_media());
        assert!(refused(&conflicting).contains("conflicting"));
    }

    #[test]
    fn refuses_missing_or_bad_ice_credentials() {
        let fp = format!("a=fingerprint:{FP}\r\n");
        assert!(
            refused(&offer(
                "",
                &format!("a=ice-pwd:abcdefghijklmnopqrstuv\r\n{fp}")
            ))
            .contains("no ice-ufrag")
        );
        assert!(refused(&offer("", &format!("a=ice-ufrag:abcd\r\n{fp}"))).contains("no ice-pwd"));
        assert!(
            refused(&offer(
                "",
                &format!("a=ice-ufrag:ab\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n{fp}")
            ))
            .contains("ice-ufrag")
        );
        assert!(
            refused(&offer(
                "",
                &format!("a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n{fp}")
            ))
            .contains("ice-pwd")
        );
        assert!(
            refused(&offer(
                "",
                &format!("a=ice-ufrag:ab;d\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n{fp}")
            ))
            .contains("ice-ufrag")
        );
    }

    #[test]
    fn refuses_extmap_ids_out_of_range() {
        let with = |ext: &str| offer("", &format!("{}{ext}", good_media()));
        assert!(
            refused(&with(
                "a=extmap:0 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
            ))
            .contains("extmap id")
        );
        assert!(
            refused(&with(
                "a=extmap:15 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
            ))
            .contains("extmap id")
        );
        assert!(refused(&with("a=extmap:99999 urn:x\r\n")).contains("extmap id"));
        assert!(check_remote(&with("a=extmap:14/sendrecv urn:x\r\n")).is_ok());
        let mixed = offer(
            "a=extmap-allow-mixed\r\n",
            &format!("{}a=extmap:200 urn:x\r\n", good_media()),
        );
        assert!(check_remote(&mixed).is_ok());
    }

    #[test]
    fn refuses_hostname_candidates_and_drops_mdns_ones() {
        let with = |c: &str| offer("", &format!("{}a=candidate:{c}\r\n", good_media()));
        assert!(
            refused(&with("1 1 udp 2122260223 example.com 50000 typ host")).contains("IP address")
        );
        assert!(
            refused(&with("1 1 udp 2122260223 127.0.0.1 notaport typ host")).contains("malformed")
        );
        assert!(refused(&with("garbage")).contains("malformed"));
        let ip = with("1 1 udp 2122260223 127.0.0.1 50000 typ host");
        assert_eq!(check_remote(&ip).unwrap(), ip);
        let mdns =
            with("1 1 udp 2122260223 0d5f2c4e-1a2b-4c3d-8e9f-0123456789ab.local 50000 typ host");
        let cleaned = check_remote(&mdns).unwrap();
        assert!(!cleaned.contains(".local"), "{cleaned}");
        assert_eq!(cleaned, offer("", &good_media()));
    }

    #[test]
    fn refuses_unreadable_and_oversized_descriptions() {
        assert!(refused("this is no sdp").contains("unreadable"));
        let mut many = offer("", &good_media());
        for i in 1..=MAX_MEDIA_SECTIONS {
            many.push_str(&format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{i}\r\n"));
        }
        assert!(refused(&many).contains("media sections"));
    }
}
