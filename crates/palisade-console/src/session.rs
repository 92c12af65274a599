//! Console sessions: a login with the admin token opens one, kept in an HttpOnly, SameSite=Strict
//! cookie; every state-changing call must also carry the session's CSRF token in a header.
//!
//! Session ids and CSRF tokens are 256 random bits. Lookups compare every stored id in constant time
//! (there are few sessions), a session ends after an idle or an absolute limit, and one opened with an
//! admin token that has since changed (a reload) is no longer accepted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use subtle::ConstantTimeEq;

/// The cookie that carries the session id.
pub const COOKIE: &str = "palisade_console";
/// A session unused this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, used or not.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a new login beyond it ends the least recently used.
pub const MAX_SESSIONS: usize = 32;
/// Failed logins allowed per minute (all clients together) before logins are refused for a minute.
pub const MAX_FAILED_LOGINS_PER_MINUTE: u32 = 10;

struct Session {
    id: [u8; 32],
    csrf: String,
    /// SHA-256 of the admin token the session was opened with.
    token_digest: [u8; 32],
    opened: Instant,
    last_used: Instant,
}

/// What a valid session lets the page know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The cookie value.
    pub id: String,
    pub csrf: String,
}

#[derive(Default)]
struct State {
    sessions: Vec<Session>,
    failures: Vec<Instant>,
}

#[derive(Default)]
pub struct Sessions {
    state: Mutex<State>,
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// `admin.token` is not set: the console is off.
    NotConfigured,
    WrongToken,
    /// Too many failed logins in the last minute.
    Throttled,
}

impl LoginRefused {
    /// The reason code in audit events.
    pub fn reason(self) -> &'static str {
        match self {
            LoginRefused::NotConfigured => "admin_token_not_configured",
            LoginRefused::WrongToken => "admin_token_invalid",
            LoginRefused::Throttled => "login_throttled",
        }
    }
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

fn digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Sessions {
    /// Opens a session if `presented` is the admin token (`expected`; `None` when none is set).
    pub fn login(&self, expected: Option<&str>, presented: &str, now: Instant) -> Result<Opened, LoginRefused> {
        let mut state = self.state.lock().map_err(|_| LoginRefused::Throttled)?;
        state
            .failures
            .retain(|at| now.saturating_duration_since(*at) < Duration::from_secs(60));
        if state.failures.len() as u32 >= MAX_FAILED_LOGINS_PER_MINUTE {
            return Err(LoginRefused::Throttled);
        }
        let expected = expected.ok_or(LoginRefused::NotConfigured)?;
        if !bool::from(presented.trim().as_bytes().ct_eq(expected.as_bytes())) {
            state.failures.push(now);
            return Err(LoginRefused::WrongToken);
        }
        let id = random_bytes();
        let id_hex = hex(&id);
        let csrf = hex(&random_bytes());
        state.sessions.retain(|s| live(s, now));
        if state.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = state
                .sessions
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i)
            {
                state.sessions.remove(oldest);
            }
        }
        state.sessions.push(Session {
            id,
            csrf: csrf.clone(),
            token_digest: digest(expected),
            opened: now,
            last_used: now,
        });
        Ok(Opened { id: id_hex, csrf })
    }

    /// The session whose id is `cookie`, if it is live and was opened with the current admin token;
    /// using it restarts its idle timer.
    pub fn find(&self, cookie: &str, current_token: Option<&str>, now: Instant) -> Option<Opened> {
        let id = unhex(cookie)?;
        let current = digest(current_token?);
        let mut state = self.state.lock().ok()?;
        state.sessions.retain(|s| live(s, now));
        let mut found = None;
        // Every id is compared, so the time taken does not depend on which one matched.
        for (i, session) in state.sessions.iter().enumerate() {
            if bool::from(session.id.ct_eq(&id)) {
                found = Some(i);
            }
        }
        let index = found?;
        if !bool::from(state.sessions[index].token_digest.ct_eq(&current)) {
            state.sessions.remove(index);
            return None;
        }
        let session = &mut state.sessions[index];
        session.last_used = now;
        Some(Opened {
            id: cookie.to_string(),
            csrf: session.csrf.clone(),
        })
    }

    /// Ends the session `cookie` (logout).
    pub fn end(&self, cookie: &str) {
        let Some(id) = unhex(cookie) else { return };
        if let Ok(mut state) = self.state.lock() {
            state.sessions.retain(|s| !bool::from(s.id.ct_eq(&id)));
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.sessions.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn live(session: &Session, now: Instant) -> bool {
    now.saturating_duration_since(session.last_used) < IDLE_TIMEOUT
        && now.saturating_duration_since(session.opened) < ABSOLUTE_TIMEOUT
}

/// Whether `presented` (the `X-CSRF-Token` header) is the session's token, in constant time.
pub fn csrf_matches(session: &Opened, presented: Option<&str>) -> bool {
    match presented {
        Some(presented) => bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "correct horse battery staple";

    #[test]
    fn only_the_admin_token_opens_a_session() {
        let sessions = Sessions::default();
        let now = Instant::now();
        assert_eq!(sessions.login(None, TOKEN, now), Err(LoginRefused::NotConfigured));
        assert_eq!(sessions.login(Some(TOKEN), "guess", now), Err(LoginRefused::WrongToken));
        let opened = sessions.login(Some(TOKEN), TOKEN, now).unwrap();
        assert_eq!(opened.id.len(), 64);
        assert_ne!(opened.id, opened.csrf);
        assert_eq!(sessions.find(&opened.id, Some(TOKEN), now), Some(opened.clone()));
        assert_eq!(sessions.find(&"0".repeat(64), Some(TOKEN), now), None);
        assert_eq!(sessions.find("not hex", Some(TOKEN), now), None);
        sessions.end(&opened.id);
        assert_eq!(sessions.find(&opened.id, Some(TOKEN), now), None);
    }

    #[test]
    fn sessions_expire_and_die_with_a_changed_token() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let opened = sessions.login(Some(TOKEN), TOKEN, now).unwrap();
        let later = now + IDLE_TIMEOUT - Duration::from_secs(1);
        assert!(
            sessions.find(&opened.id, Some(TOKEN), later).is_some(),
            "use restarts the idle timer"
        );
        assert!(
            sessions.find(&opened.id, Some(TOKEN), later + IDLE_TIMEOUT).is_none(),
            "idle"
        );
        let opened = sessions.login(Some(TOKEN), TOKEN, now).unwrap();
        let mut at = now;
        while at < now + ABSOLUTE_TIMEOUT - IDLE_TIMEOUT {
            at += IDLE_TIMEOUT / 2;
            assert!(sessions.find(&opened.id, Some(TOKEN), at).is_some());
        }
        assert!(
            sessions.find(&opened.id, Some(TOKEN), now + ABSOLUTE_TIMEOUT).is_none(),
            "absolute"
        );
        let opened = sessions.login(Some(TOKEN), TOKEN, now).unwrap();
        assert!(
            sessions.find(&opened.id, Some("rotated"), now).is_none(),
            "token changed"
        );
        assert!(
            sessions.find(&opened.id, Some(TOKEN), now).is_none(),
            "and it stays ended"
        );
        assert!(sessions.find(&opened.id, None, now).is_none());
    }

    #[test]
    fn failed_logins_are_throttled_and_sessions_bounded() {
        let sessions = Sessions::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILED_LOGINS_PER_MINUTE {
            assert_eq!(sessions.login(Some(TOKEN), "guess", now), Err(LoginRefused::WrongToken));
        }
        assert_eq!(sessions.login(Some(TOKEN), TOKEN, now), Err(LoginRefused::Throttled));
        let later = now + Duration::from_secs(61);
        assert!(sessions.login(Some(TOKEN), TOKEN, later).is_ok());
        for _ in 0..MAX_SESSIONS * 2 {
            sessions.login(Some(TOKEN), TOKEN, later).unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn csrf_tokens_must_match() {
        let sessions = Sessions::default();
        let opened = sessions.login(Some(TOKEN), TOKEN, Instant::now()).unwrap();
        assert!(csrf_matches(&opened, Some(&opened.csrf.clone())));
        assert!(!csrf_matches(&opened, Some(&opened.id.clone())));
        assert!(!csrf_matches(&opened, None));
    }
}
