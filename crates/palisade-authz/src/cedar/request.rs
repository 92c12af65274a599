//! A request as Cedar sees it: entities for the principal, the action and the route, and the
//! context. What repeats from request to request (a caller's entity, an address's `ip` value, the
//! schema's actions) is built once and reused.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression, Schema,
};
use palisade_auth::{Principal, PrincipalKind};
use serde_json::{Map, Value};

use crate::RequestFacts;

/// Claims nested deeper than this are left out of `principal.claims`.
const MAX_CLAIM_DEPTH: usize = 4;
/// Callers and client addresses remembered (the least used are forgotten first).
const CACHED_CALLERS: usize = 10_000;

/// A principal compared by value (pointer equality first: the same verified token gives the same
/// `Arc`), hashed by its identifying fields.
#[derive(Clone)]
pub struct PrincipalKey(pub Arc<Principal>);

impl PartialEq for PrincipalKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for PrincipalKey {}

impl std::hash::Hash for PrincipalKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.subject.hash(state);
        self.0.issuer.hash(state);
        self.0.expires_at.hash(state);
    }
}

/// A principal's entity, with its uid and ancestors (roles and groups) for the scope check.
pub struct PrincipalEntity {
    pub uid: EntityUid,
    pub ancestors: HashSet<EntityUid>,
    entity: Entity,
}

/// An action declared in the schema: its entity (so `action in Action::"group"` holds in Cedar)
/// and its ancestors (for the scope check).
pub struct SchemaAction {
    pub ancestors: HashSet<EntityUid>,
    entity: Entity,
}

pub struct RequestBuilder {
    types: EntityTypes,
    context_headers: Vec<(http::HeaderName, String)>,
    actions: HashMap<EntityUid, SchemaAction>,
    principals: quick_cache::sync::Cache<PrincipalKey, Arc<PrincipalEntity>>,
    addresses: quick_cache::sync::Cache<IpAddr, RestrictedExpression>,
}

impl RequestBuilder {
    /// `None` when Cedar rejects Palisade's own type names or the schema's actions (neither
    /// happens with a schema that validated).
    pub fn new(schema: &Schema, context_headers: &[String]) -> Option<RequestBuilder> {
        let context_headers = context_headers
            .iter()
            .filter_map(|name| {
                let header = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                Some((header, name.to_ascii_lowercase().replace('-', "_")))
            })
            .collect();
        Some(RequestBuilder {
            types: EntityTypes::new()?,
            context_headers,
            actions: schema_actions(schema)?,
            principals: quick_cache::sync::Cache::new(CACHED_CALLERS),
            addresses: quick_cache::sync::Cache::new(CACHED_CALLERS),
        })
    }

    pub fn context_headers(&self) -> &[(http::HeaderName, String)] {
        &self.context_headers
    }

    pub fn action_uid(&self, name: &str) -> EntityUid {
        uid(&self.types.action, name)
    }

    pub fn route_uid(&self, route: &str) -> EntityUid {
        uid(&self.types.route, route)
    }

    pub fn schema_action(&self, action: &EntityUid) -> Option<&SchemaAction> {
        self.actions.get(action)
    }

    pub fn principal(&self, principal: &Arc<Principal>) -> Option<Arc<PrincipalEntity>> {
        let key = PrincipalKey(Arc::clone(principal));
        if let Some(entity) = self.principals.get(&key) {
            return Some(entity);
        }
        let entity = Arc::new(self.principal_entity(principal)?);
        self.principals.insert(key, Arc::clone(&entity));
        Some(entity)
    }

    fn principal_entity(&self, principal: &Principal) -> Option<PrincipalEntity> {
        let types = &self.types;
        let principal_type = match principal.kind {
            PrincipalKind::User => &types.user,
            PrincipalKind::Service => &types.service,
            PrincipalKind::ApiKey => &types.api_key,
        };
        let principal_uid = uid(principal_type, &principal.subject);
        let ancestors: HashSet<EntityUid> = principal
            .roles
            .iter()
            .map(|role| uid(&types.role, role))
            .chain(principal.groups.iter().map(|group| uid(&types.group, group)))
            .collect();
        let strings =
            |list: &[String]| RestrictedExpression::new_set(list.iter().cloned().map(RestrictedExpression::new_string));
        let attributes = HashMap::from([
            (
                "subject".to_string(),
                RestrictedExpression::new_string(principal.subject.clone()),
            ),
            (
                "issuer".to_string(),
                RestrictedExpression::new_string(principal.issuer.clone()),
            ),
            ("scopes".to_string(), strings(&principal.scopes)),
            ("roles".to_string(), strings(&principal.roles)),
            ("groups".to_string(), strings(&principal.groups)),
            ("claims".to_string(), claims_record(&principal.claims, 0)?),
        ]);
        let entity = Entity::new(principal_uid.clone(), attributes, ancestors.clone()).ok()?;
        Some(PrincipalEntity {
            uid: principal_uid,
            ancestors,
            entity,
        })
    }

    /// The Cedar request and its entities; `None` when a value cannot be expressed in Cedar (the
    /// caller denies).
    pub fn build(
        &self,
        facts: &RequestFacts<'_>,
        principal: &PrincipalEntity,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Option<(Request, Entities)> {
        let params = RestrictedExpression::new_record(
            facts
                .params
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .ok()?;
        let route = Entity::new(
            resource.clone(),
            HashMap::from([
                (
                    "path".to_string(),
                    RestrictedExpression::new_string(facts.path.to_string()),
                ),
                ("params".to_string(), params),
            ]),
            HashSet::new(),
        )
        .ok()?;
        let action_entity = self.actions.get(action).map(|known| known.entity.clone());
        let entities =
            Entities::from_entities([principal.entity.clone(), route].into_iter().chain(action_entity), None).ok()?;
        let context = self.context(facts)?;
        let request = Request::new(principal.uid.clone(), action.clone(), resource.clone(), context, None).ok()?;
        Some((request, entities))
    }

    fn context(&self, facts: &RequestFacts<'_>) -> Option<Context> {
        let headers = self.context_headers.iter().filter_map(|(header, key)| {
            let value = facts.headers.get(header)?.to_str().ok()?;
            Some((key.clone(), RestrictedExpression::new_string(value.to_string())))
        });
        let mut context = vec![
            ("ip".to_string(), self.address(facts.client_ip)),
            (
                "method".to_string(),
                RestrictedExpression::new_string(facts.method.as_str().to_string()),
            ),
            (
                "path".to_string(),
                RestrictedExpression::new_string(facts.path.to_string()),
            ),
            (
                "time".to_string(),
                RestrictedExpression::new_long(i64::try_from(facts.unix_time).ok()?),
            ),
            ("headers".to_string(), RestrictedExpression::new_record(headers).ok()?),
        ];
        if let Some(identity) = facts.mtls_identity {
            context.push((
                "mtls_identity".to_string(),
                RestrictedExpression::new_string(identity.to_string()),
            ));
        }
        Context::from_pairs(context).ok()
    }

    /// `ip("…")` for an address; Cedar parses the extension's name on every `new_ip`, so each
    /// address's expression is built once.
    fn address(&self, address: IpAddr) -> RestrictedExpression {
        if let Some(expression) = self.addresses.get(&address) {
            return expression;
        }
        let expression = RestrictedExpression::new_ip(address.to_string());
        self.addresses.insert(address, expression.clone());
        expression
    }
}

/// The schema's actions with their ancestors (action groups).
fn schema_actions(schema: &Schema) -> Option<HashMap<EntityUid, SchemaAction>> {
    let entities = schema.action_entities().ok()?;
    let actions = entities
        .iter()
        .map(|entity| {
            let action = entity.uid();
            let ancestors = entities
                .ancestors(&action)
                .map(|ancestors| ancestors.cloned().collect())
                .unwrap_or_default();
            (
                action,
                SchemaAction {
                    ancestors,
                    entity: entity.clone(),
                },
            )
        })
        .collect();
    Some(actions)
}

/// The entity type names, parsed once.
struct EntityTypes {
    user: EntityTypeName,
    service: EntityTypeName,
    api_key: EntityTypeName,
    role: EntityTypeName,
    group: EntityTypeName,
    route: EntityTypeName,
    action: EntityTypeName,
}

impl EntityTypes {
    fn new() -> Option<EntityTypes> {
        let name = |text: &str| EntityTypeName::from_str(text).ok();
        Some(EntityTypes {
            user: name("Palisade::User")?,
            service: name("Palisade::Service")?,
            api_key: name("Palisade::ApiKey")?,
            role: name("Palisade::Role")?,
            group: name("Palisade::Group")?,
            route: name("Palisade::Route")?,
            action: name("Palisade::Action")?,
        })
    }
}

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

/// Claims as a Cedar record: strings, booleans, integers, sets and nested records; other values
/// (floats, nulls, too deep) are left out. Values are built as Cedar values, never parsed from JSON,
/// so a claim can never turn into an entity reference or an extension value.
fn claims_record(claims: &Map<String, Value>, depth: usize) -> Option<RestrictedExpression> {
    let fields: Vec<(String, RestrictedExpression)> = claims
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), claim_value(value, depth)?)))
        .collect();
    RestrictedExpression::new_record(fields).ok()
}

fn claim_value(value: &Value, depth: usize) -> Option<RestrictedExpression> {
    match value {
        Value::String(text) => Some(RestrictedExpression::new_string(text.clone())),
        Value::Bool(flag) => Some(RestrictedExpression::new_bool(*flag)),
        Value::Number(number) => number.as_i64().map(RestrictedExpression::new_long),
        Value::Array(items) if depth < MAX_CLAIM_DEPTH => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| claim_value(item, depth + 1)),
        )),
        Value::Object(map) if depth < MAX_CLAIM_DEPTH => claims_record(map, depth + 1),
        _ => None,
    }
}
