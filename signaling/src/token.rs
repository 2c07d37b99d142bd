//! Access tokens: JWTs signed with HMAC-SHA256 by an API key's secret
//! (docs/protocol.md, "Access tokens").

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 10;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Grants {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default)]
    pub room_join: bool,
    #[serde(default = "yes")]
    pub can_publish: bool,
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    #[serde(default)]
    pub admin: bool,
    /// May send `data` messages to the room.
    #[serde(default = "yes")]
    pub can_publish_data: bool,
    /// May change the other participants of its room (promote, demote,
    /// mute, remove) over signaling, as the server API does.
    #[serde(default)]
    pub room_admin: bool,
    /// A role the server defines (`host`, `speaker`, `listener`, or the
    /// operator's): when set, its grants replace the `can_*` and
    /// `room_admin` above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What a role grants in a room (configuration `[roles.<name>]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGrants {
    #[serde(default = "yes")]
    pub can_publish: bool,
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    #[serde(default = "yes")]
    pub can_publish_data: bool,
    #[serde(default)]
    pub room_admin: bool,
}

/// The roles every node knows unless its configuration redefines them: a
/// voice room's host and speakers talk, its listeners listen (and react
/// with data messages).
pub fn default_roles() -> HashMap<String, RoleGrants> {
    let talks = RoleGrants {
        can_publish: true,
        can_subscribe: true,
        can_publish_data: true,
        room_admin: false,
    };
    let listens = RoleGrants {
        can_publish: false,
        ..talks
    };
    let hosts = RoleGrants {
        room_admin: true,
        ..talks
    };
    HashMap::from([
        ("host".to_owned(), hosts),
        ("speaker".to_owned(), talks),
        ("listener".to_owned(), listens),
    ])
}

impl Grants {
    /// The grants that apply in a room: the role's when the token names
    /// one (`None` for a role `roles` does not define), else the token's.
    pub fn effective(&self, roles: &HashMap<String, RoleGrants>) -> Option<RoleGrants> {
        match &self.role {
            Some(name) => roles.get(name).copied(),
            None => Some(RoleGrants {
                can_publish: self.can_publish,
                can_subscribe: self.can_subscribe,
                can_publish_data: self.can_publish_data,
                room_admin: self.room_admin,
            }),
        }
    }
}

fn yes() -> bool {
    true
}

/// Who pays for a call and how, as the app's backend signed it
/// (docs/metering.md). Checked by the metering module at join.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BillingClaims {
    /// The identity whose wallet pays. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// The identity who earns (a host); none: any other participant answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee: Option<String>,
    /// Coins per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<i64>,
    /// `audio` or `video`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_type: Option<String>,
    /// Rating increments, `<initial>/<increment>` seconds, e.g. `60/60`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increments: Option<String>,
    /// The platform's share, e.g. `20%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commission: Option<String>,
    /// A rate plan named in the server's configuration, instead of the terms above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The call (`CA_…`) these terms bill, in tokens `POST /v1/calls`
    /// mints: the call's session takes over the call's hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing: Option<BillingClaims>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token is expired or not yet valid")]
    Expired,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// The API key pairs tokens may be signed with (several during rotation).
#[derive(Clone)]
pub struct KeyRing {
    keys: HashMap<String, hmac::Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.keys.keys().collect();
        names.sort();
        f.debug_struct("KeyRing").field("api_keys", &names).finish()
    }
}

impl KeyRing {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        KeyRing {
            keys: pairs
                .into_iter()
                .map(|(k, s)| {
                    (
                        k.to_owned(),
                        hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()),
                    )
                })
                .collect(),
        }
    }

    /// Signs `claims` with the secret of `claims.iss`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let body = serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?;
        self.sign_payload(&claims.iss, &body)
    }

    /// Signs `payload` as a token's claims part, byte for byte, with the
    /// secret of `iss`, whatever the bytes are: how tests and the fuzz
    /// targets reach the checks that run after the signature.
    pub fn sign_payload(&self, iss: &str, payload: &[u8]) -> Result<String, TokenError> {
        let key = self.keys.get(iss).ok_or(TokenError::BadSignature)?;
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
        };
        let encode = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Malformed)?;
        let signing_input = format!("{}.{}", encode(&header), encode(payload));
        let tag = hmac::sign(key, signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", encode(tag.as_ref())))
    }

    /// Checks the signature and validity window of `token` at `now` (seconds
    /// since 1970) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |v: &str| URL_SAFE_NO_PAD.decode(v).map_err(|_| TokenError::Malformed);
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Malformed);
        }
        let claims: Claims =
            serde_json::from_slice(&decode(b)?).map_err(|_| TokenError::Malformed)?;
        let signature = decode(s)?;
        let key = self.keys.get(&claims.iss).ok_or(TokenError::BadSignature)?;
        let signing_input = &token[..h.len() + 1 + b.len()];
        hmac::verify(key, signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        // `exp + LEEWAY_SECS <= now` and `nbf > now + LEEWAY_SECS`, as
        // differences: `exp` and `nbf` are the sender's numbers and no sum
        // of them may overflow. `exp = u64::MAX` never expires
        // (docs/protocol.md, "Access tokens").
        let expired = now
            .checked_sub(claims.exp)
            .is_some_and(|late| late >= LEEWAY_SECS);
        let not_yet_valid = claims
            .nbf
            .and_then(|nbf| nbf.checked_sub(now))
            .is_some_and(|early| early > LEEWAY_SECS);
        if expired || not_yet_valid {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new([("devkey", "secret"), ("newkey", "other-secret")])
    }

    fn claims(iss: &str, exp: u64) -> Claims {
        Claims {
            iss: iss.into(),
            sub: "alice".into(),
            name: Some("Alice".into()),
            iat: 1000,
            nbf: Some(1000),
            exp,
            grants: Grants {
                room: Some("demo".into()),
                room_join: true,
                can_publish: true,
                can_subscribe: true,
                admin: false,
                can_publish_data: true,
                role: None,
                room_admin: false,
            },
            billing: None,
        }
    }

    #[test]
    fn a_role_replaces_the_tokens_grants_and_an_unknown_role_grants_nothing() {
        let roles = default_roles();
        let mut grants = claims("devkey", 2000).grants;
        assert_eq!(
            grants.effective(&roles),
            Some(RoleGrants {
                can_publish: true,
                can_subscribe: true,
                can_publish_data: true,
                room_admin: false,
            }),
            "no role: the token's own"
        );
        grants.role = Some("listener".into());
        assert_eq!(
            grants.effective(&roles),
            Some(RoleGrants {
                can_publish: false,
                can_subscribe: true,
                can_publish_data: true,
                room_admin: false,
            })
        );
        grants.role = Some("host".into());
        grants.can_publish = false;
        assert_eq!(grants.effective(&roles).map(|g| g.can_publish), Some(true));
        grants.role = Some("emperor".into());
        assert_eq!(grants.effective(&roles), None);
    }

    #[test]
    fn round_trip_with_each_key() {
        for iss in ["devkey", "newkey"] {
            let t = ring().sign(&claims(iss, 2000)).unwrap();
            assert_eq!(ring().verify(&t, 1500).unwrap(), claims(iss, 2000));
        }
    }

    #[test]
    fn verifies_a_token_minted_elsewhere() {
        // Minted with Python's hmac/hashlib, as an app backend would.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJkZXZrZXkiLCJzdWIiOiJib2IiLCJpYXQiOjEsImV4cCI6NDEwMjQ0NDgwMCwiZ3JhbnRzIjp7InJvb20iOiJyIiwicm9vbV9qb2luIjp0cnVlfX0.1c6TwvT-BGL62PKhNyc6YyrOG9namj_rWMzO_xdqNmA";
        let c = ring().verify(token, 100).unwrap();
        assert_eq!(c.sub, "bob");
        assert_eq!(c.grants.room.as_deref(), Some("r"));
        assert!(c.grants.can_publish && c.grants.can_subscribe && !c.grants.admin);
    }

    #[test]
    fn refuses_bad_tokens() {
        let good = ring().sign(&claims("devkey", 2000)).unwrap();
        assert_eq!(ring().verify(&good, 2010), Err(TokenError::Expired));
        // Ten seconds of clock skew are forgiven on both ends.
        assert_eq!(ring().verify(&good, 995), Ok(claims("devkey", 2000)));
        assert_eq!(ring().verify(&good, 2005), Ok(claims("devkey", 2000)));
        assert_eq!(ring().verify(&good, 900), Err(TokenError::Expired));
        let mut nbf_future = claims("devkey", 5000);
        nbf_future.nbf = Some(3000);
        let t = ring().sign(&nbf_future).unwrap();
        assert_eq!(ring().verify(&t, 2000), Err(TokenError::Expired));

        // Same header and claims, another key's signature.
        let forged = KeyRing::new([("devkey", "wrong-secret")])
            .sign(&claims("devkey", 2000))
            .unwrap();
        let (signed, _) = good.rsplit_once('.').unwrap();
        let (_, signature) = forged.rsplit_once('.').unwrap();
        let tampered = format!("{signed}.{signature}");
        assert_eq!(
            ring().verify(&tampered, 1500),
            Err(TokenError::BadSignature)
        );

        let other = KeyRing::new([("devkey", "not-the-secret")]);
        assert_eq!(other.verify(&good, 1500), Err(TokenError::BadSignature));
        let unknown = KeyRing::new([("somekey", "secret")]);
        assert_eq!(unknown.verify(&good, 1500), Err(TokenError::BadSignature));

        for bad in ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
            assert_eq!(
                ring().verify(bad, 1500),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            good.split('.').nth(1).unwrap()
        );
        assert_eq!(ring().verify(&none_alg, 1500), Err(TokenError::Malformed));
    }

    #[test]
    fn exp_u64_max_never_expires() {
        // Before saturating arithmetic, `exp + LEEWAY_SECS` panicked here in
        // a debug build.
        let forever = claims("devkey", u64::MAX);
        let t = ring().sign(&forever).unwrap();
        assert_eq!(ring().verify(&t, 1500), Ok(forever.clone()));
        assert_eq!(ring().verify(&t, u64::MAX), Ok(forever.clone()));
        // Near the end of time the leeway is still exact.
        let almost = claims("devkey", u64::MAX - 9);
        let t = ring().sign(&almost).unwrap();
        assert_eq!(ring().verify(&t, u64::MAX), Ok(almost));
        let t = ring().sign(&claims("devkey", u64::MAX - 10)).unwrap();
        assert_eq!(ring().verify(&t, u64::MAX), Err(TokenError::Expired));
    }

    #[test]
    fn nbf_u64_max_is_not_yet_valid() {
        let mut never_valid = claims("devkey", u64::MAX);
        never_valid.nbf = Some(u64::MAX);
        let t = ring().sign(&never_valid).unwrap();
        assert_eq!(ring().verify(&t, 1500), Err(TokenError::Expired));
        // Within the leeway of the end of time it turns valid, without
        // `now + LEEWAY_SECS` overflowing on the way.
        assert_eq!(ring().verify(&t, u64::MAX - 11), Err(TokenError::Expired));
        assert_eq!(ring().verify(&t, u64::MAX - 10), Ok(never_valid.clone()));
        assert_eq!(ring().verify(&t, u64::MAX), Ok(never_valid));
    }

    #[test]
    fn out_of_range_times_are_malformed() {
        // Correctly signed, but no u64: refused before any arithmetic.
        for body in [
            r#"{"iss":"devkey","sub":"a","iat":1,"exp":18446744073709551616}"#,
            r#"{"iss":"devkey","sub":"a","iat":1,"exp":-1}"#,
            r#"{"iss":"devkey","sub":"a","iat":1,"exp":1e30}"#,
            r#"{"iss":"devkey","sub":"a","iat":1,"exp":2000,"nbf":-5}"#,
        ] {
            let t = ring().sign_payload("devkey", body.as_bytes()).unwrap();
            assert_eq!(
                ring().verify(&t, 1500),
                Err(TokenError::Malformed),
                "{body}"
            );
        }
    }

    #[test]
    fn sign_payload_signs_the_bytes_given() {
        let body = br#"{"iss":"devkey","sub":"a","iat":1,"exp":2000}"#;
        let t = ring().sign_payload("devkey", body).unwrap();
        let part = t.split('.').nth(1).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(part).unwrap(), body);
        assert_eq!(ring().verify(&t, 1500).unwrap().exp, 2000);
        assert_eq!(
            ring().sign_payload("nokey", body),
            Err(TokenError::BadSignature)
        );
    }
}
