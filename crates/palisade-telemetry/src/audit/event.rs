//! The audit event and its OCSF mapping: which class, activity and severity each kind of decision
//! has, and the fields a SIEM reads.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// What happened, in Palisade's terms; each kind maps to one OCSF class and activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    AuthenticationFailed,
    AuthenticationSucceeded,
    AuthorizationDenied,
    IpBlocked,
    RateLimited,
    ValidationFailed,
    /// Refused before routing as malformed or an attack (ambiguous framing, path tricks).
    RequestRejected,
    CorsRejected,
    TlsHandshakeRefused,
    ConfigReloaded,
    ConfigRejected,
    CertificateIssued,
    CertificateRefused,
    CertificateRenewed,
    CertificateExpiring,
    /// Events lost while the sink was behind (counted, reported when it caught up).
    AuditEventsDropped,
    /// An anomaly detector opened an alert (OCSF Detection Finding, Create).
    AlertOpened,
    /// The condition cleared and the alert closed (Detection Finding, Close).
    AlertClosed,
    /// A block or tightened limit was applied to a client or principal (Detection Finding, Update).
    ResponseTaken,
    /// A response expired or was revoked (Detection Finding, Update).
    ResponseLifted,
    /// An admin API call that reads or changes alerts or responses (OCSF API Activity).
    AdminAction,
    /// An admin API call refused: no or a wrong token (API Activity, failure).
    AdminRefused,
    /// The shared rate-limit store (Redis) stopped answering: limits fall back or fail closed.
    LimitStoreUnavailable,
    /// The shared rate-limit store answers again: limits are shared again.
    LimitStoreRecovered,
}

struct Class {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const AUTHENTICATION: Class = Class {
    class_uid: 3002,
    class_name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const ENTITY_MANAGEMENT: Class = Class {
    class_uid: 3004,
    class_name: "Entity Management",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const NETWORK_ACTIVITY: Class = Class {
    class_uid: 4001,
    class_name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const HTTP_ACTIVITY: Class = Class {
    class_uid: 4002,
    class_name: "HTTP Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const DETECTION_FINDING: Class = Class {
    class_uid: 2004,
    class_name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};
const API_ACTIVITY: Class = Class {
    class_uid: 6003,
    class_name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
};
const APPLICATION_LIFECYCLE: Class = Class {
    class_uid: 6002,
    class_name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};

impl EventKind {
    fn class(self) -> &'static Class {
        use EventKind::*;
        match self {
            AuthenticationFailed | AuthenticationSucceeded => &AUTHENTICATION,
            AuthorizationDenied | IpBlocked | RateLimited | ValidationFailed | RequestRejected | CorsRejected => {
                &HTTP_ACTIVITY
            }
            TlsHandshakeRefused => &NETWORK_ACTIVITY,
            ConfigReloaded | ConfigRejected | AuditEventsDropped | LimitStoreUnavailable | LimitStoreRecovered => {
                &APPLICATION_LIFECYCLE
            }
            CertificateIssued | CertificateRefused | CertificateRenewed | CertificateExpiring => &ENTITY_MANAGEMENT,
            AlertOpened | AlertClosed | ResponseTaken | ResponseLifted => &DETECTION_FINDING,
            AdminAction | AdminRefused => &API_ACTIVITY,
        }
    }

    /// OCSF severity: 1 informational, 2 low, 3 medium, 4 high.
    fn severity(self) -> (u8, &'static str) {
        use EventKind::*;
        match self {
            AuthenticationSucceeded
            | ConfigReloaded
            | CertificateIssued
            | CertificateRenewed
            | AlertClosed
            | ResponseLifted
            | AdminAction
            | LimitStoreRecovered => (1, "Informational"),
            AuthorizationDenied | IpBlocked | RateLimited | ValidationFailed | CorsRejected | TlsHandshakeRefused
            | CertificateRefused => (2, "Low"),
            AuthenticationFailed | RequestRejected | ConfigRejected | AuditEventsDropped | ResponseTaken
            | AdminRefused => (3, "Medium"),
            CertificateExpiring | AlertOpened | LimitStoreUnavailable => (4, "High"),
        }
    }

    fn succeeded(self) -> bool {
        use EventKind::*;
        matches!(
            self,
            AuthenticationSucceeded
                | ConfigReloaded
                | CertificateIssued
                | CertificateRenewed
                | AlertOpened
                | AlertClosed
                | ResponseTaken
                | ResponseLifted
                | AdminAction
                | LimitStoreRecovered
        )
    }
}

/// The request an event is about.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub request_id: String,
    pub method: String,
    /// The normalized path (never the query string).
    pub path: String,
    pub host: String,
    pub client_ip: Option<IpAddr>,
    pub route: Option<String>,
    pub listener: Option<String>,
    pub status: Option<u16>,
}

/// One audit event, serialized as an OCSF object.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch (OCSF `timestamp_t`).
    pub time: u64,
    pub class_uid: u32,
    pub class_name: &'static str,
    pub category_uid: u32,
    pub category_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'static str,
    pub type_uid: u64,
    pub severity_id: u8,
    pub severity: &'static str,
    /// 1 success, 2 failure.
    pub status_id: u8,
    pub status: &'static str,
    /// The reason code (the same codes as metrics and the access log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// HTTP Activity only: 2 denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    pub message: String,
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    /// Authentication: who logged on (or tried to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Other classes: who acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_request: Option<HttpRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_response: Option<HttpResponse>,
    /// Entity Management: the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<Entity>,
    /// Detection Finding: the alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_info: Option<FindingInfo>,
    /// API Activity: the admin operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
    /// Palisade's own fields, under OCSF's `unmapped`.
    pub unmapped: Unmapped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub version: &'static str,
    pub product: Product,
    pub log_name: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub name: &'static str,
    pub vendor_name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub user: User,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpRequest {
    pub uid: String,
    pub http_method: String,
    pub url: Url,
}

#[derive(Debug, Clone, Serialize)]
pub struct Url {
    pub hostname: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpResponse {
    pub code: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entity {
    pub name: String,
    pub r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingInfo {
    /// The alert id (unique within one gateway process).
    pub uid: String,
    pub title: String,
    /// The detector: `rate_spike`, `auth_failures`, `scanning`, `probing`, `upstream_errors`.
    pub types: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Api {
    /// `METHOD /path`, e.g. `DELETE /responses/{id}`.
    pub operation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unmapped {
    /// The Palisade event kind: the stable name to filter on.
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// The pipeline stage that decided, and whose fault the refusal is (`client`, `upstream`,
    /// `gateway`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<palisade_core::decision::Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<palisade_core::decision::Fault>,
    /// The rule or policy that decided, for authorization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// How the principal authenticated (`jwt`, `api_key`, `mtls`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    /// Free-form numbers (e.g. `dropped`, `expires_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// What an alert was about (a route, a client address, a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A response (block or limit) taken, lifted or changed through the admin API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    /// The Kubernetes workload a certificate was asked for by (ServiceAccount token attestation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadFacts>,
}

/// A Kubernetes workload as its ServiceAccount token names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadFacts {
    pub namespace: String,
    pub service_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` with the common fields filled in; `reason` is the reason code.
    pub fn new(kind: EventKind, reason: Option<&str>, message: impl Into<String>) -> Self {
        let class = kind.class();
        let (severity_id, severity) = kind.severity();
        let (activity_id, activity_name) = default_activity(kind);
        let succeeded = kind.succeeded();
        Self {
            time: now_ms(),
            class_uid: class.class_uid,
            class_name: class.class_name,
            category_uid: class.category_uid,
            category_name: class.category_name,
            activity_id,
            activity_name,
            type_uid: u64::from(class.class_uid) * 100 + u64::from(activity_id),
            severity_id,
            severity,
            status_id: if succeeded { 1 } else { 2 },
            status: if succeeded { "Success" } else { "Failure" },
            status_detail: reason.map(str::to_string),
            action_id: None,
            action: None,
            message: message.into(),
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: "Palisade",
                    vendor_name: "Palisade",
                    version: env!("CARGO_PKG_VERSION"),
                },
                log_name: "audit",
            },
            src_endpoint: None,
            user: None,
            actor: None,
            http_request: None,
            http_response: None,
            entity: None,
            finding_info: None,
            api: None,
            unmapped: Unmapped {
                event: kind,
                route: None,
                listener: None,
                stage: None,
                fault: None,
                decided_by: None,
                auth_method: None,
                count: None,
                expires_at: None,
                subject: None,
                response: None,
                workload: None,
            },
        }
    }

    /// An event about one HTTP request: HTTP Activity (denied, activity by method) or
    /// Authentication, with the client, the request and the answer filled in.
    pub fn for_request(kind: EventKind, reason: &str, facts: RequestFacts) -> Self {
        let message = format!("{} {} refused: {reason}", facts.method, facts.path);
        let mut event = Self::new(kind, Some(reason), message);
        if kind.class().class_uid == HTTP_ACTIVITY.class_uid {
            let (id, name) = http_activity(&facts.method);
            event.set_activity(id, name);
            event.action_id = Some(2);
            event.action = Some("Denied");
        }
        if kind == EventKind::AuthenticationSucceeded {
            event.message = format!("{} {} authenticated", facts.method, facts.path);
        }
        event.src_endpoint = facts.client_ip.map(|ip| Endpoint { ip, port: None });
        event.http_request = Some(HttpRequest {
            uid: facts.request_id,
            http_method: facts.method,
            url: Url {
                hostname: facts.host,
                path: facts.path,
            },
        });
        event.http_response = facts.status.map(|code| HttpResponse { code });
        event.unmapped.route = facts.route;
        event.unmapped.listener = facts.listener;
        event
    }

    /// The subject the request was made as (Authentication: `user`; others: `actor.user`).
    pub fn with_subject(mut self, subject: &str, auth_method: Option<&str>) -> Self {
        let user = User {
            uid: subject.to_string(),
            type_name: None,
        };
        if self.class_uid == AUTHENTICATION.class_uid {
            self.user = Some(user);
        } else {
            self.actor = Some(Actor { user });
        }
        self.unmapped.auth_method = auth_method.map(str::to_string);
        self
    }

    pub fn with_source(mut self, ip: IpAddr, port: Option<u16>) -> Self {
        self.src_endpoint = Some(Endpoint { ip, port });
        self
    }

    pub fn with_certificate(mut self, spiffe_id: &str, serial: Option<&str>, expires_at: Option<u64>) -> Self {
        self.entity = Some(Entity {
            name: spiffe_id.to_string(),
            r#type: "X.509 certificate",
            uid: serial.map(str::to_string),
        });
        self.unmapped.expires_at = expires_at;
        self
    }

    /// The workload that asked (its ServiceAccount is the actor).
    pub fn with_workload(mut self, workload: WorkloadFacts) -> Self {
        let user = User {
            uid: format!(
                "system:serviceaccount:{}:{}",
                workload.namespace, workload.service_account
            ),
            type_name: Some("ServiceAccount".into()),
        };
        self.actor = Some(Actor { user });
        self.unmapped.workload = Some(workload);
        self
    }

    /// An alert event: the detector's finding, with the alert's own severity (`low`, `medium`,
    /// `high`) in place of the kind's.
    pub fn for_alert(kind: EventKind, id: u64, detector: &str, subject: &str, severity: &str, message: &str) -> Self {
        let mut event = Self::new(kind, Some(detector), message);
        if kind == EventKind::AlertOpened {
            (event.severity_id, event.severity) = match severity {
                "low" => (2, "Low"),
                "medium" => (3, "Medium"),
                _ => (4, "High"),
            };
        }
        event.finding_info = Some(FindingInfo {
            uid: id.to_string(),
            title: message.to_string(),
            types: vec![detector.to_string()],
        });
        event.unmapped.subject = Some(subject.to_string());
        if let Ok(ip) = subject.parse() {
            event.src_endpoint = Some(Endpoint { ip, port: None });
        }
        event
    }

    /// An admin API call by `peer` (the actor is the admin token, never its value).
    pub fn for_admin(kind: EventKind, operation: String, peer: IpAddr, reason: Option<&str>) -> Self {
        let message = match reason {
            Some(reason) => format!("admin API {operation} refused: {reason}"),
            None => format!("admin API {operation}"),
        };
        let mut event = Self::new(kind, reason, message);
        let (id, name) = match operation.split(' ').next() {
            Some("POST") => (1, "Create"),
            Some("GET") | Some("HEAD") => (2, "Read"),
            Some("PUT") | Some("PATCH") => (3, "Update"),
            Some("DELETE") => (4, "Delete"),
            _ => (99, "Other"),
        };
        event.set_activity(id, name);
        event.api = Some(Api { operation });
        event.src_endpoint = Some(Endpoint { ip: peer, port: None });
        event.actor = Some(Actor {
            user: User {
                uid: "admin-token".into(),
                type_name: Some("Admin".into()),
            },
        });
        event
    }

    fn set_activity(&mut self, id: u32, name: &'static str) {
        self.activity_id = id;
        self.activity_name = name;
        self.type_uid = u64::from(self.class_uid) * 100 + u64::from(id);
    }
}

fn default_activity(kind: EventKind) -> (u32, &'static str) {
    use EventKind::*;
    match kind {
        AuthenticationFailed | AuthenticationSucceeded => (1, "Logon"),
        TlsHandshakeRefused => (5, "Refuse"),
        ConfigReloaded | ConfigRejected => (8, "Update"),
        AuditEventsDropped => (99, "Other"),
        AlertOpened => (1, "Create"),
        ResponseTaken | ResponseLifted => (2, "Update"),
        AlertClosed => (3, "Close"),
        AdminAction | AdminRefused => (99, "Other"),
        LimitStoreUnavailable => (4, "Stop"),
        LimitStoreRecovered => (3, "Start"),
        CertificateIssued | CertificateRenewed => (1, "Create"),
        CertificateRefused | CertificateExpiring => (99, "Other"),
        AuthorizationDenied | IpBlocked | RateLimited | ValidationFailed | RequestRejected | CorsRejected => {
            (99, "Other")
        }
    }
}

/// OCSF HTTP Activity activities by method.
fn http_activity(method: &str) -> (u32, &'static str) {
    match method {
        "CONNECT" => (1, "Connect"),
        "DELETE" => (2, "Delete"),
        "GET" => (3, "Get"),
        "HEAD" => (4, "Head"),
        "OPTIONS" => (5, "Options"),
        "POST" => (6, "Post"),
        "PUT" => (7, "Put"),
        "TRACE" => (8, "Trace"),
        _ => (99, "Other"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A denied `GET /admin` as the tests of this module and its sinks use it.
#[cfg(test)]
pub(crate) fn sample_request() -> RequestFacts {
    RequestFacts {
        request_id: "r-1".into(),
        method: "GET".into(),
        path: "/admin".into(),
        host: "api.example.com".into(),
        client_ip: Some("192.0.2.7".parse().unwrap()),
        route: Some("admin".into()),
        listener: Some("public".into()),
        status: Some(403),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestFacts {
        sample_request()
    }

    #[test]
    fn a_denied_request_is_an_ocsf_http_activity() {
        let event = AuditEvent::for_request(EventKind::AuthorizationDenied, "forbidden", request())
            .with_subject("alice", Some("jwt"));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["class_uid"], 4002);
        assert_eq!(json["category_uid"], 4);
        assert_eq!(json["activity_id"], 3, "GET");
        assert_eq!(json["type_uid"], 400203);
        assert_eq!(json["action_id"], 2);
        assert_eq!(json["status_id"], 2);
        assert_eq!(json["status_detail"], "forbidden");
        assert_eq!(json["actor"]["user"]["uid"], "alice");
        assert_eq!(json["src_endpoint"]["ip"], "192.0.2.7");
        assert_eq!(json["http_request"]["url"]["path"], "/admin");
        assert_eq!(json["http_response"]["code"], 403);
        assert_eq!(json["metadata"]["version"], OCSF_VERSION);
        assert_eq!(json["unmapped"]["event"], "authorization_denied");
    }

    #[test]
    fn an_authentication_failure_is_an_ocsf_logon_failure() {
        let event = AuditEvent::for_request(EventKind::AuthenticationFailed, "token_expired", request());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (json["class_uid"].as_u64(), json["activity_id"].as_u64()),
            (Some(3002), Some(1))
        );
        assert_eq!(json["type_uid"], 300201);
        assert_eq!(json["status"], "Failure");
        assert!(json.get("action_id").is_none());
    }
}
