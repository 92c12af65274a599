//! A request as Cedar sees it: entities for the principal, the action and the route, and the
//! context. What repeats from request to request (a caller's entity and the store it starts with
//! for each action, an address's `ip` value, the schema's actions) is built once and reused.
//!
//! The per-request parts are built as Cedar's own values (cedar-policy-core) and converted, because
//! the public constructors would redo work whose result Palisade already has: `Entities` there
//! always recomputes the hierarchy's transitive closure, and `Context` re-evaluates every value as
//! an expression. Here the hierarchy is closed by construction (a caller's parents are its roles and
//! groups, which have no parents in the store; the schema's actions come with their closed
//! ancestors; the route has none), and context values are values. A test checks that both ways
//! give the same store, context and decisions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

#[cfg(test)]
use cedar_policy::{Entities, Request};
use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema};
use cedar_policy_core::ast::{self, EntityUIDEntry, PartialValue, Value};
use cedar_policy_core::entities::{NoEntitiesSchema, TCComputation};
use cedar_policy_core::evaluator::{Evaluator, RestrictedEvaluator};
use cedar_policy_core::extensions::Extensions;
use palisade_auth::{Principal, PrincipalKind};
use serde_json::{Map, Value as Json};
use smol_str::SmolStr;

use super::fold::Specializer;
use super::reads::Reads;
use super::scope::{CallerScope, Candidate, ScopeIndex};
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
    entity: Arc<ast::Entity>,
}

/// An action declared in the schema: its entity (so `action in Action::"group"` holds in Cedar)
/// and its ancestors (for the scope check).
pub struct SchemaAction {
    pub ancestors: HashSet<EntityUid>,
    entity: Arc<ast::Entity>,
}

/// One caller doing one action: the policies whose principal and action constraints hold for them,
/// with their conditions specialized to the caller (see [`ScopeIndex::candidates`]), and the entity
/// store every request of theirs starts from (the principal's entity and the action's), so that a
/// request adds only its route (two hashes of an entity uid instead of six).
pub struct Caller {
    /// For the tests, which build the same request with cedar-policy's public constructors.
    #[cfg(test)]
    pub principal: PrincipalEntity,
    #[cfg(test)]
    pub action: EntityUid,
    pub candidates: Box<[Candidate]>,
    store: cedar_policy_core::entities::Entities,
    /// The principal and the action as a Cedar request names them (cloned per request: a count).
    principal_entry: EntityUIDEntry,
    action_entry: EntityUIDEntry,
}

/// A caller cache key: the principal (see [`PrincipalKey`]) and the action's name.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CallerKey {
    principal: PrincipalKey,
    action: Arc<str>,
}

pub struct RequestBuilder {
    types: EntityTypes,
    context_headers: Vec<(http::HeaderName, SmolStr)>,
    actions: HashMap<EntityUid, SchemaAction>,
    callers: quick_cache::sync::Cache<CallerKey, Arc<Caller>>,
    addresses: quick_cache::sync::Cache<IpAddr, Value>,
    /// `context.headers` when the request has none of `context_headers`.
    no_headers: Value,
}

impl RequestBuilder {
    /// `None` when Cedar rejects Palisade's own type names or the schema's actions (neither
    /// happens with a schema that validated).
    pub fn new(schema: &Schema, header_names: &[String]) -> Option<RequestBuilder> {
        let mut context_headers: Vec<(http::HeaderName, SmolStr)> = Vec::new();
        for name in header_names {
            let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let key = SmolStr::new(name.to_ascii_lowercase().replace('-', "_"));
            // A record has each key once: a header named twice (in any case) is one field.
            if !context_headers.iter().any(|(_, known)| *known == key) {
                context_headers.push((header, key));
            }
        }
        Some(RequestBuilder {
            types: EntityTypes::new()?,
            context_headers,
            actions: schema_actions(schema)?,
            callers: quick_cache::sync::Cache::new(CACHED_CALLERS),
            addresses: quick_cache::sync::Cache::new(CACHED_CALLERS),
            no_headers: Value::record_arc(Arc::new(BTreeMap::new()), None),
        })
    }

    pub fn context_headers(&self) -> &[(http::HeaderName, SmolStr)] {
        &self.context_headers
    }

    pub fn action_uid(&self, name: &str) -> EntityUid {
        uid(&self.types.action, name)
    }

    pub fn route_uid(&self, route: &str) -> EntityUid {
        uid(&self.types.route, route)
    }

    /// `principal` doing `action` (a named operation or a method) under the policies of `scopes`,
    /// built once and remembered (the cache goes with the set at reload).
    pub fn caller(&self, principal: &Arc<Principal>, action: &Arc<str>, scopes: &ScopeIndex) -> Option<Arc<Caller>> {
        let key = CallerKey {
            principal: PrincipalKey(Arc::clone(principal)),
            action: Arc::clone(action),
        };
        if let Some(caller) = self.callers.get(&key) {
            return Some(caller);
        }
        let caller = Arc::new(self.new_caller(principal, action, scopes)?);
        self.callers.insert(key, Arc::clone(&caller));
        Some(caller)
    }

    fn new_caller(&self, principal: &Principal, action: &str, scopes: &ScopeIndex) -> Option<Caller> {
        let principal = self.principal_entity(principal)?;
        let action = self.action_uid(action);
        let declared = self.actions.get(&action);
        let members =
            std::iter::once(Arc::clone(&principal.entity)).chain(declared.map(|known| Arc::clone(&known.entity)));
        // Closed by construction (see the module's comment), so the closure is not recomputed.
        let store = cedar_policy_core::entities::Entities::new()
            .add_entities(
                members,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::none(),
            )
            .ok()?;
        let principal_entry = EntityUIDEntry::known(principal.uid.as_ref().clone(), None);
        let action_entry = EntityUIDEntry::known(action.as_ref().clone(), None);
        // The caller's parts of conditions never look at the resource or the context (see `fold`).
        let callers_request = ast::Request::new_unchecked(
            principal_entry.clone(),
            action_entry.clone(),
            EntityUIDEntry::unknown(),
            None,
        );
        let evaluator = Evaluator::new(callers_request, &store, Extensions::all_available());
        let no_groups = HashSet::new();
        let caller = CallerScope {
            principal: &principal.uid,
            principal_ancestors: &principal.ancestors,
            action: &action,
            action_ancestors: declared.map_or(&no_groups, |known| &known.ancestors),
        };
        let specializer = Specializer {
            caller: &evaluator,
            route: self.types.route.as_ref(),
            headers: &self.context_headers,
        };
        let candidates = scopes.candidates(&caller, &specializer);
        drop(evaluator);
        Some(Caller {
            principal_entry,
            action_entry,
            #[cfg(test)]
            principal,
            #[cfg(test)]
            action,
            candidates,
            store,
        })
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
            entity: Arc::new(entity.as_ref().clone()),
        })
    }

    /// The whole Cedar request and its entities, as cedar-policy's types (for its authorizer).
    #[cfg(test)]
    pub fn build_public(
        &self,
        facts: &RequestFacts<'_>,
        caller: &Caller,
        resource: &EntityUid,
    ) -> Option<(Request, Entities)> {
        let (request, entities) = self.build(facts, caller, resource, Reads::ALL)?;
        Some((Request::from(request), Entities::from(entities)))
    }

    /// The Cedar request and its entities, as Cedar's evaluator takes them, with the context
    /// fields and route attributes in `reads` (what the policies to evaluate can look at; see
    /// [`Reads`]); `None` when a value cannot be expressed in Cedar (the caller denies).
    pub fn build(
        &self,
        facts: &RequestFacts<'_>,
        caller: &Caller,
        resource: &EntityUid,
        reads: Reads,
    ) -> Option<(ast::Request, cedar_policy_core::entities::Entities)> {
        // Denied whatever the policies read, as it would be with the whole request.
        if names_a_param_twice(facts.params) {
            return None;
        }
        // A Vec: Cedar collects the attributes into a map, which reuses a Vec's allocation.
        let mut attributes = Vec::with_capacity(2);
        if reads.has(Reads::ROUTE_PATH) {
            attributes.push((SmolStr::new_static("path"), PartialValue::from(facts.path)));
        }
        if reads.has(Reads::ROUTE_PARAMS) {
            let params: BTreeMap<SmolStr, Value> = facts
                .params
                .iter()
                .map(|(k, v)| (SmolStr::new(k), Value::from(v.as_str())))
                .collect();
            let params = Value::record_arc(Arc::new(params), None);
            attributes.push((SmolStr::new_static("params"), PartialValue::from(params)));
        }
        let route = ast::Entity::new_with_attr_partial_value(
            resource.as_ref().clone(),
            attributes,
            HashSet::new(),
            HashSet::new(),
            [],
        );
        // The route has no parents and no principal or action is a route: still closed.
        let entities = caller
            .store
            .clone()
            .add_entities(
                [Arc::new(route)],
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::none(),
            )
            .ok()?;
        let request = ast::Request::new_unchecked(
            caller.principal_entry.clone(),
            caller.action_entry.clone(),
            EntityUIDEntry::known(resource.as_ref().clone(), None),
            Some(self.context(facts, reads)?),
        );
        Some((request, entities))
    }

    fn context(&self, facts: &RequestFacts<'_>, reads: Reads) -> Option<ast::Context> {
        // Converted whether read or not: a time Cedar cannot hold denies, as it always has.
        let time = i64::try_from(facts.unix_time).ok()?;
        let mut context = BTreeMap::new();
        let mut add = |name: &'static str, value: Value| context.insert(SmolStr::new_static(name), value);
        if reads.has(Reads::CONTEXT_IP) {
            add("ip", self.address(facts.client_ip)?);
        }
        if reads.has(Reads::CONTEXT_METHOD) {
            add("method", Value::from(facts.method.as_str()));
        }
        if reads.has(Reads::CONTEXT_PATH) {
            add("path", Value::from(facts.path));
        }
        if reads.has(Reads::CONTEXT_TIME) {
            add("time", Value::from(time));
        }
        if reads.has(Reads::CONTEXT_HEADERS) {
            add("headers", self.headers_record(facts));
        }
        if let (true, Some(identity)) = (reads.has(Reads::CONTEXT_MTLS_IDENTITY), facts.mtls_identity) {
            add("mtls_identity", Value::from(identity));
        }
        Some(ast::Context::Value(Arc::new(context)))
    }

    /// `context.headers`: the configured headers the request sent, by their record keys.
    fn headers_record(&self, facts: &RequestFacts<'_>) -> Value {
        let headers: BTreeMap<SmolStr, Value> = self
            .context_headers
            .iter()
            .filter_map(|(header, key)| {
                let value = facts.headers.get(header)?.to_str().ok()?;
                Some((key.clone(), Value::from(value)))
            })
            .collect();
        // Most requests send none of them: one empty record serves them all.
        if headers.is_empty() {
            self.no_headers.clone()
        } else {
            Value::record_arc(Arc::new(headers), None)
        }
    }

    /// The `ip("…")` value of an address, evaluated once per address (Cedar parses the extension's
    /// name and the address on every evaluation).
    fn address(&self, address: IpAddr) -> Option<Value> {
        if let Some(value) = self.addresses.get(&address) {
            return Some(value);
        }
        let expression = RestrictedExpression::new_ip(address.to_string());
        let value = RestrictedEvaluator::new(Extensions::all_available())
            .interpret(expression.as_ref().as_borrowed())
            .ok()?;
        self.addresses.insert(address, value.clone());
        Some(value)
    }
}

/// A name twice is not a record (Cedar's own constructor refuses it too).
pub fn names_a_param_twice(params: &[(String, String)]) -> bool {
    let named_twice = |(at, (name, _)): (usize, &(String, String))| {
        params
            .get(..at)
            .is_some_and(|before| before.iter().any(|(seen, _)| seen == name))
    };
    params.iter().enumerate().any(named_twice)
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
                    entity: Arc::new(entity.as_ref().clone()),
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
fn claims_record(claims: &Map<String, Json>, depth: usize) -> Option<RestrictedExpression> {
    let fields: Vec<(String, RestrictedExpression)> = claims
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), claim_value(value, depth)?)))
        .collect();
    RestrictedExpression::new_record(fields).ok()
}

fn claim_value(value: &Json, depth: usize) -> Option<RestrictedExpression> {
    match value {
        Json::String(text) => Some(RestrictedExpression::new_string(text.clone())),
        Json::Bool(flag) => Some(RestrictedExpression::new_bool(*flag)),
        Json::Number(number) => number.as_i64().map(RestrictedExpression::new_long),
        Json::Array(items) if depth < MAX_CLAIM_DEPTH => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| claim_value(item, depth + 1)),
        )),
        Json::Object(map) if depth < MAX_CLAIM_DEPTH => claims_record(map, depth + 1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cedar::tests::schema;
    use cedar_policy::{Authorizer, Context, PolicySet};
    use palisade_auth::AuthMethodKind;

    const ROUTE_AND_ACTIONS: &str = r#"  entity Route { path: String, params: { id?: String, line?: String } };
  action everything;
  action read in [everything];
  action "GET" in [read] appliesTo { principal: [User, Service, ApiKey], resource: Route, context: Ctx };
  type Ctx = { ip: ipaddr, method: String, path: String, time: Long, headers: {}, mtls_identity?: String };
"#;

    /// Reads every part of the request: an ancestor two action groups up, roles and groups, claims,
    /// the route's path and parameters, and each context field.
    const POLICIES: &str = r#"
permit (principal in Palisade::Role::"admin", action in Palisade::Action::"everything", resource)
  when { context.ip.isInRange(ip("10.0.0.0/8")) && context.headers has x_tenant && context.headers.x_tenant == "acme" };
permit (principal, action, resource) when { resource.params has id && principal.subject == resource.params.id };
permit (principal in Palisade::Group::"ops", action, resource) when { context has mtls_identity && context.time < 2000 };
permit (principal, action, resource) when { principal.claims has level && principal.claims.level > 3 && context.method == "GET" };
forbid (principal, action, resource) when { resource.path like "/vault*" || context.path like "*/secret" };
"#;

    fn principal(subject: &str, roles: &[&str], groups: &[&str], level: i64) -> Arc<Principal> {
        Arc::new(Principal {
            kind: PrincipalKind::User,
            method: AuthMethodKind::Jwt,
            subject: subject.into(),
            issuer: "https://idp".into(),
            scopes: vec!["orders:read".into()],
            roles: roles.iter().map(|r| r.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            claims: serde_json::json!({"level": level, "nested": {"list": [1, "two", true]}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            expires_at: None,
        })
    }

    /// The same request built with cedar-policy's public constructors only: `from_entities` with
    /// its closure computation, `Context::from_pairs` evaluating every expression.
    fn public_build(
        builder: &RequestBuilder,
        facts: &RequestFacts<'_>,
        caller: &Caller,
        resource: &EntityUid,
    ) -> (Request, Entities) {
        let (principal, action) = (&caller.principal, &caller.action);
        let string = |text: &str| RestrictedExpression::new_string(text.to_string());
        let params = facts.params.iter().map(|(k, v)| (k.clone(), string(v)));
        let route = Entity::new(
            resource.clone(),
            HashMap::from([
                ("path".to_string(), string(facts.path)),
                (
                    "params".to_string(),
                    RestrictedExpression::new_record(params).expect("params record"),
                ),
            ]),
            HashSet::new(),
        )
        .expect("route entity");
        let mut members = vec![Entity::from(principal.entity.as_ref().clone()), route];
        if let Some(known) = builder.actions.get(action) {
            members.push(Entity::from(known.entity.as_ref().clone()));
        }
        let entities = Entities::from_entities(members, None).expect("entities");
        let headers = builder.context_headers.iter().filter_map(|(header, key)| {
            let value = facts.headers.get(header)?.to_str().ok()?;
            Some((key.to_string(), string(value)))
        });
        let mut pairs = vec![
            (
                "ip".to_string(),
                RestrictedExpression::new_ip(facts.client_ip.to_string()),
            ),
            ("method".to_string(), string(facts.method.as_str())),
            ("path".to_string(), string(facts.path)),
            (
                "time".to_string(),
                RestrictedExpression::new_long(i64::try_from(facts.unix_time).expect("time")),
            ),
            (
                "headers".to_string(),
                RestrictedExpression::new_record(headers).expect("headers record"),
            ),
        ];
        if let Some(identity) = facts.mtls_identity {
            pairs.push(("mtls_identity".to_string(), string(identity)));
        }
        let context = Context::from_pairs(pairs).expect("context");
        let request =
            Request::new(principal.uid.clone(), action.clone(), resource.clone(), context, None).expect("request");
        (request, entities)
    }

    #[test]
    fn values_built_directly_equal_what_the_public_constructors_build() {
        let (schema, _) = Schema::from_cedarschema_str(&schema(ROUTE_AND_ACTIONS)).expect("schema parses");
        let policies: PolicySet = POLICIES.parse().expect("policies parse");
        let builder = RequestBuilder::new(&schema, &["X-Tenant".into(), "x-tenant".into()]).expect("builder");
        let authorizer = Authorizer::new();
        let scopes = ScopeIndex::new(&policies, &HashMap::new());
        let principals = [
            principal("alice", &["admin"], &[], 1),
            principal("7", &[], &["ops"], 5),
            principal("bob", &["viewer"], &["ops", "staff"], 2),
        ];
        let mut tenant = http::HeaderMap::new();
        tenant.insert("x-tenant", http::HeaderValue::from_static("acme"));
        let no_headers = http::HeaderMap::new();
        let (mut compared, mut allowed) = (0, 0);
        for caller in &principals {
            let entity = builder.caller(caller, &Arc::from("GET"), &scopes).expect("caller");
            for (path, params) in [
                ("/orders/7", vec![("id".to_string(), "7".to_string())]),
                (
                    "/orders/7/lines/2",
                    vec![("id".into(), "7".into()), ("line".into(), "2".into())],
                ),
                ("/vault/7", vec![("id".to_string(), "7".to_string())]),
                ("/x/secret", vec![]),
            ] {
                for client_ip in ["10.1.2.3", "192.0.2.1", "::1"] {
                    for headers in [&tenant, &no_headers] {
                        for (mtls_identity, unix_time) in
                            [(None, 1000), (Some("spiffe://p/ns/a"), 1000), (Some("x"), 3000)]
                        {
                            let facts = RequestFacts {
                                principal: caller,
                                method: &http::Method::GET,
                                route: "orders",
                                path,
                                params: &params,
                                client_ip: client_ip.parse().expect("address"),
                                headers,
                                mtls_identity,
                                unix_time,
                            };
                            let resource = builder.route_uid("orders");
                            let (request, entities) = builder
                                .build_public(&facts, &entity, &resource)
                                .expect("request builds");
                            let (public_request, public_entities) = public_build(&builder, &facts, &entity, &resource);
                            assert!(request == public_request, "request for {path} from {client_ip}");
                            assert!(
                                entities.as_ref().deep_eq(public_entities.as_ref()),
                                "entities for {path}"
                            );
                            let decision = authorizer.is_authorized(&request, &policies, &entities);
                            let public = authorizer.is_authorized(&public_request, &policies, &public_entities);
                            assert_eq!(decision.decision(), public.decision());
                            assert!(decision.diagnostics().errors().next().is_none());
                            // Only the first policy admits alice: GET is in `everything` two groups up.
                            let admitted = caller.subject == "alice"
                                && client_ip == "10.1.2.3"
                                && std::ptr::eq(headers, &tenant)
                                && path.starts_with("/orders");
                            if admitted {
                                assert_eq!(decision.decision(), cedar_policy::Decision::Allow, "{path}");
                            }
                            compared += 1;
                            allowed += usize::from(decision.decision() == cedar_policy::Decision::Allow);
                        }
                    }
                }
            }
        }
        // Both answers are common, and every permit and the forbid decide somewhere.
        assert_eq!(compared, 3 * 4 * 3 * 2 * 3);
        assert!(
            allowed > compared / 5 && allowed < compared * 4 / 5,
            "{allowed} of {compared}"
        );
    }

    #[test]
    fn a_parameter_named_twice_is_not_a_request() {
        let (schema, _) = Schema::from_cedarschema_str(&schema(ROUTE_AND_ACTIONS)).expect("schema parses");
        let builder = RequestBuilder::new(&schema, &[]).expect("builder");
        let caller = principal("alice", &[], &[], 1);
        let scopes = ScopeIndex::new(&PolicySet::new(), &HashMap::new());
        let entity = builder.caller(&caller, &Arc::from("GET"), &scopes).expect("caller");
        let params = [("id".to_string(), "1".to_string()), ("id".to_string(), "2".to_string())];
        let facts = RequestFacts {
            principal: &caller,
            method: &http::Method::GET,
            route: "orders",
            path: "/orders/1/2",
            params: &params,
            client_ip: "127.0.0.1".parse().expect("address"),
            headers: &http::HeaderMap::new(),
            mtls_identity: None,
            unix_time: 1000,
        };
        let built = builder.build(&facts, &entity, &builder.route_uid("orders"), Reads::NOTHING);
        assert!(built.is_none());
    }
}
