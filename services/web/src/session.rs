//! Browser sessions: a random id in an HttpOnly cookie, everything else on the server.
//!
//! The organization's API key is what the services authenticate, so a signed-in session holds
//! it (in memory only, never in the cookie) and calls the services' APIs with it: the console
//! sees exactly what the organization's own client would, and the services audit every read as
//! that organization. A session ends when idle too long, at an absolute limit, at sign-out, or
//! when this process stops (sessions are not persisted: a restart asks everyone to sign in
//! again, which is cheaper than keeping API keys on disk).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hixbus_access::Role;
use rand::RngCore;
use secrecy::SecretString;

/// Sessions held at once, signed in or not. Beyond it the oldest anonymous ones go first; a
/// flood of anonymous visitors can never push out someone signed in.
pub const MAX_SESSIONS: usize = 10_000;

/// Who a session acts for.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Not signed in: a visitor with a CSRF token for the sign-in form.
    Anonymous,
    Organization {
        id: String,
        name: String,
        role: Role,
        /// Sent to the services as `Authorization: Bearer`.
        key: SecretString,
    },
    /// A patient signed in at their OpenID Connect provider.
    Patient {
        /// The record it is (`patient_ref`, as the patient service answers).
        patient_ref: String,
        /// The ID token, sent to the patient service as `Authorization: Bearer`; the session
        /// ends when it expires.
        token: SecretString,
        /// The record of someone they act for as a proxy, when they switched to it.
        acting_for: Option<String>,
    },
}

/// A sign-in at a patient's provider, between leaving for it and coming back (the code flow).
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    /// The PKCE verifier: the provider's code is worth nothing without it.
    pub verifier: SecretString,
    pub redirect_uri: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub csrf: String,
    pub principal: Principal,
    /// A patient sign-in under way (anonymous sessions only).
    pub login: Option<PendingLogin>,
    created: Instant,
    last_seen: Instant,
    /// When it ends regardless (a patient's ID token expiring).
    ends: Option<Instant>,
}

impl Session {
    pub fn organization(&self) -> Option<(&str, &str, Role, &SecretString)> {
        match &self.principal {
            Principal::Organization {
                id,
                name,
                role,
                key,
            } => Some((id, name, *role, key)),
            Principal::Anonymous | Principal::Patient { .. } => None,
        }
    }

    /// The patient's record, ID token and the record they act for, when a patient signed in.
    pub fn patient(&self) -> Option<(&str, &SecretString, Option<&str>)> {
        match &self.principal {
            Principal::Patient {
                patient_ref,
                token,
                acting_for,
            } => Some((patient_ref, token, acting_for.as_deref())),
            _ => None,
        }
    }

    /// Whether `token` is this session's CSRF token.
    pub fn csrf_matches(&self, token: &str) -> bool {
        same_secret(&self.csrf, token)
    }
}

/// Whether two secrets (a CSRF token, an OAuth state) are equal, compared in constant time: a
/// forger must not be able to guess one a byte at a time.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, thiserror::Error)]
#[error("too many sessions are open; retry in a minute")]
pub struct Full;

/// The session table.
#[derive(Debug, Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
    idle: Duration,
    absolute: Duration,
}

/// 256 random bits, base64url: session ids, CSRF tokens, OAuth state, nonces, PKCE verifiers.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self {
            inner: Arc::default(),
            idle,
            absolute,
        }
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) < self.idle
            && now.duration_since(session.created) < self.absolute
            && session.ends.is_none_or(|ends| now < ends)
    }

    /// The session behind a cookie value, if it is still live; a request someone made keeps
    /// it alive.
    pub fn get(&self, id: &str) -> Option<Session> {
        self.find(id, true)
    }

    /// [`Self::get`] for what a page asks by itself (a live list's refresh): it does not keep
    /// the session alive, so a screen left open still signs out when nobody uses it.
    pub fn peek(&self, id: &str) -> Option<Session> {
        self.find(id, false)
    }

    fn find(&self, id: &str, touch: bool) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let live = map.get(id).map(|s| self.live(s, now))?;
        if !live {
            map.remove(id);
            return None;
        }
        let session = map.get_mut(id)?;
        if touch {
            session.last_seen = now;
        }
        Some(session.clone())
    }

    /// A new session for `principal`, with a fresh id and CSRF token. Signing in always starts
    /// a new session (the anonymous one is dropped), so an id planted before sign-in is useless.
    pub fn start(&self, principal: Principal) -> Result<Session, Full> {
        self.start_with(principal, None, None)
    }

    /// A session that ends at `ends` at the latest, or holds a sign-in under way.
    pub fn start_with(
        &self,
        principal: Principal,
        login: Option<PendingLogin>,
        ends: Option<Instant>,
    ) -> Result<Session, Full> {
        let now = Instant::now();
        let session = Session {
            id: random_token(),
            csrf: random_token(),
            principal,
            login,
            created: now,
            last_seen: now,
            ends,
        };
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| self.live(s, now));
        }
        if map.len() >= MAX_SESSIONS {
            let oldest_anonymous = map
                .values()
                .filter(|s| matches!(s.principal, Principal::Anonymous))
                .min_by_key(|s| s.last_seen)
                .map(|s| s.id.clone());
            match oldest_anonymous {
                Some(id) => {
                    map.remove(&id);
                }
                None => return Err(Full),
            }
        }
        map.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// Switches a signed-in patient's session to the record of someone they act for (`None`:
    /// back to their own). Whether they may is the patient service's to say, at every call.
    pub fn act_for(&self, id: &str, patient: Option<String>) -> bool {
        let mut sessions = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get_mut(id).map(|s| &mut s.principal) {
            Some(Principal::Patient { acting_for, .. }) => {
                *acting_for = patient;
                true
            }
            _ => false,
        }
    }

    pub fn end(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> Principal {
        Principal::Organization {
            id: "pharmacy-aozora".into(),
            name: "あおぞら薬局".into(),
            role: Role::Pharmacy,
            key: SecretString::from("k"),
        }
    }

    #[test]
    fn an_idle_session_ends_and_an_active_one_lives() {
        let sessions = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let idle = sessions.start(org()).unwrap();
        let active = sessions.start(org()).unwrap();
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(20));
            assert!(sessions.get(&active.id).is_some());
        }
        assert!(sessions.get(&idle.id).is_none());
    }

    #[test]
    fn a_screen_refreshing_itself_does_not_keep_an_idle_session_alive() {
        let sessions = Sessions::new(Duration::from_millis(60), Duration::from_secs(60));
        let s = sessions.start(org()).unwrap();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(25));
            let _ = sessions.peek(&s.id);
        }
        assert!(
            sessions.peek(&s.id).is_none(),
            "idle however often it peeked"
        );
    }

    #[test]
    fn a_session_ends_at_its_absolute_limit_however_active() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_millis(60));
        let s = sessions.start(org()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(sessions.get(&s.id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(sessions.get(&s.id).is_none());
    }

    #[test]
    fn anonymous_visitors_never_push_out_the_signed_in() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let signed_in = sessions.start(org()).unwrap();
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.start(Principal::Anonymous).unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.get(&signed_in.id).is_some());
    }

    #[test]
    fn ids_and_tokens_are_distinct_and_checked_exactly() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let a = sessions.start(Principal::Anonymous).unwrap();
        let b = sessions.start(Principal::Anonymous).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches(&a.csrf[1..]));
        sessions.end(&a.id);
        assert!(sessions.get(&a.id).is_none());
    }
}
