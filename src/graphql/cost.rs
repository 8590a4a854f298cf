//! What a request will cost SSM, estimated from its document before it runs.
//!
//! SSM's rate limits are per account and region and shared with everything
//! else there, so the budget is per (account, region) source: for the
//! operation about to run, each root field's upstream calls are summed per
//! source it reads, counting every page as a miss (the estimate never
//! depends on cache state), and a request whose estimate exceeds
//! `limits.max_upstream_calls_per_source` on any source is refused before
//! it executes, like a validation error (`COST_LIMIT_EXCEEDED`, with the
//! account, region, estimate and limit). The same limit is enforced while
//! it runs (`crate::paging::RequestBudget`), should the estimate be wrong.
//!
//! Per root field, on each source it reads:
//! - `sessions`: `ceil(first / pageSize)` pages, plus a look-ahead, plus a
//!   re-fetch of the page `after` points into; with `managedNode` selected,
//!   `ceil(first / 50)` `DescribeInstanceInformation` batches;
//! - `session` and `node`: two lookups (Active, then History), plus one
//!   node batch with `managedNode`;
//! - anything else: nothing upstream.
//!
//! Fields whose arguments the resolver would refuse (a negative `first`, an
//! unknown account) cost nothing: they fail before any call. `@skip` and
//! `@include` with literal or variable conditions are honoured.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
    NextValidation,
};
use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, Field, OperationDefinition, Selection,
    SelectionSet,
};
use async_graphql::{
    Name, Positioned, Request, ServerError, ServerResult, ValidationResult, Value, Variables,
};
use async_graphql_value::Value as RawValue;

use super::types::node_id;
use crate::accounts::{Account, AccountRegistry};
use crate::error::code;
use crate::model::{Region, SourceKey};
use crate::sessions::Caller;
use crate::settings::Limits;
use crate::upstream::nodes::MAX_IDS_PER_CALL;

/// A request's estimated upstream calls, per source, and its root fields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub per_source: BTreeMap<SourceKey, usize>,
    pub root_fields: usize,
}

/// Estimates requests against the configured sources and limits.
pub struct CostModel {
    registry: Arc<AccountRegistry>,
    limits: Limits,
}

impl CostModel {
    pub fn new(registry: Arc<AccountRegistry>, limits: Limits) -> Self {
        Self { registry, limits }
    }

    /// The estimate of the operation `operation_name` picks (the only one
    /// when `None`; nothing when it picks none: execution refuses that).
    pub fn estimate(
        &self,
        doc: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
        visible: &dyn Fn(&Account) -> bool,
    ) -> Estimate {
        let operation = match (&doc.operations, operation_name) {
            (DocumentOperations::Single(op), _) => Some(op),
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
            _ => None,
        };
        let Some(operation) = operation else {
            return Estimate::default();
        };
        let walk = Walk::new(doc, &operation.node, variables);
        let mut estimate = Estimate::default();
        for field in walk.fields(&operation.node.selection_set.node) {
            estimate.root_fields += 1;
            for (source, calls) in self.field_cost(&walk, field, visible) {
                *estimate.per_source.entry(source).or_default() += calls;
            }
        }
        estimate
    }

    /// The first limit `estimate` breaks, as the error the client gets.
    pub fn check(&self, estimate: &Estimate) -> Option<ServerError> {
        let max_root = self.limits.max_root_fields as usize;
        if estimate.root_fields > max_root {
            let mut err = ServerError::new(
                format!(
                    "the operation has {} root fields; at most {max_root} are allowed \
                     (limits.max_root_fields)",
                    estimate.root_fields
                ),
                None,
            );
            let ext = err.extensions.get_or_insert_with(Default::default);
            ext.set("code", code::GRAPHQL_VALIDATION_FAILED);
            return Some(err);
        }
        let limit = self.limits.max_upstream_calls_per_source as usize;
        let (source, calls) = estimate
            .per_source
            .iter()
            .find(|(_, calls)| **calls > limit)?;
        let mut err = ServerError::new(
            format!(
                "this request would cost up to {calls} upstream calls in account {}, region {}; \
                 the limit is {limit} per source: ask for fewer sessions, larger pages \
                 (pageSize), fewer fields, or narrow accounts and regions",
                source.account, source.region
            ),
            None,
        );
        let ext = err.extensions.get_or_insert_with(Default::default);
        ext.set("code", code::COST_LIMIT_EXCEEDED);
        ext.set("account", source.account.as_str());
        ext.set("region", source.region.as_str());
        ext.set("estimate", *calls as u64);
        ext.set("limit", limit as u64);
        Some(err)
    }

    /// The calls of one root field per source; an account the caller may
    /// not see costs nothing (the resolver refuses it as absent), so a
    /// refusal never names an account the caller cannot see.
    fn field_cost(
        &self,
        walk: &Walk<'_>,
        field: &Field,
        visible: &dyn Fn(&Account) -> bool,
    ) -> Vec<(SourceKey, usize)> {
        let nodes_selected = walk.selects(&field.selection_set.node, "managedNode");
        match field.name.node.as_str() {
            "sessions" => self.sessions_cost(walk, field, nodes_selected, visible),
            "session" => {
                let (Some(account), Some(region)) = (
                    walk.string_arg(field, "account"),
                    walk.string_arg(field, "region"),
                ) else {
                    return Vec::new();
                };
                self.lookup_cost(&account, &region, nodes_selected, visible)
            }
            "node" => {
                let Some(id) = walk.string_arg(field, "id") else {
                    return Vec::new();
                };
                let Ok((account, region, _)) = node_id::decode(&id) else {
                    return Vec::new();
                };
                self.lookup_cost(account.as_str(), region.as_str(), nodes_selected, visible)
            }
            _ => Vec::new(),
        }
    }

    fn sessions_cost(
        &self,
        walk: &Walk<'_>,
        field: &Field,
        nodes_selected: bool,
        visible: &dyn Fn(&Account) -> bool,
    ) -> Vec<(SourceKey, usize)> {
        let first = match walk.int_arg(field, "first") {
            None => u64::from(self.limits.default_first),
            Some(n) if n < 0 || n > i64::from(self.limits.max_first) => return Vec::new(),
            Some(n) => n as u64,
        };
        let page_size = match walk.int_arg(field, "pageSize") {
            None => u64::from(self.limits.default_page_size),
            Some(n) if !(1..=i64::from(crate::model::MAX_PAGE_SIZE)).contains(&n) => {
                return Vec::new();
            }
            Some(n) => n as u64,
        };
        let accounts = walk.string_list_arg(field, "accounts");
        let regions = walk.string_list_arg(field, "regions");
        let Ok(sources) = self
            .registry
            .select(accounts.as_deref(), regions.as_deref(), visible)
        else {
            return Vec::new();
        };
        let resumes = walk.arg(field, "after").is_some_and(|v| v != Value::Null);
        let mut calls = first.div_ceil(page_size) + 1 + u64::from(resumes);
        if nodes_selected {
            calls += first.div_ceil(MAX_IDS_PER_CALL as u64);
        }
        let calls = usize::try_from(calls).unwrap_or(usize::MAX);
        sources.into_iter().map(|s| (s.key, calls)).collect()
    }

    fn lookup_cost(
        &self,
        account: &str,
        region: &str,
        nodes_selected: bool,
        visible: &dyn Fn(&Account) -> bool,
    ) -> Vec<(SourceKey, usize)> {
        let Some(account) = self.registry.account(account).filter(|a| visible(a)) else {
            return Vec::new();
        };
        let Ok(region) = Region::parse(region) else {
            return Vec::new();
        };
        let Some(source) = self.registry.source(account, &region) else {
            return Vec::new();
        };
        vec![(source.key, 2 + usize::from(nodes_selected))]
    }
}

/// A walk over one operation's selections, with its variables resolved.
struct Walk<'a> {
    doc: &'a ExecutableDocument,
    op: &'a OperationDefinition,
    variables: &'a Variables,
}

impl<'a> Walk<'a> {
    fn new(
        doc: &'a ExecutableDocument,
        op: &'a OperationDefinition,
        variables: &'a Variables,
    ) -> Self {
        Self { doc, op, variables }
    }

    /// A variable's value: given, else its default, else null.
    fn variable(&self, name: &Name) -> Value {
        if let Some(value) = self.variables.get(name) {
            return value.clone();
        }
        self.op
            .variable_definitions
            .iter()
            .find(|d| d.node.name.node == *name)
            .and_then(|d| d.node.default_value.as_ref())
            .map_or(Value::Null, |v| v.node.clone())
    }

    fn value(&self, value: &Positioned<RawValue>) -> Value {
        value
            .node
            .clone()
            .into_const_with(|name| Ok::<_, std::convert::Infallible>(self.variable(&name)))
            .unwrap_or(Value::Null)
    }

    fn arg(&self, field: &Field, name: &str) -> Option<Value> {
        field.get_argument(name).map(|v| self.value(v))
    }

    fn int_arg(&self, field: &Field, name: &str) -> Option<i64> {
        match self.arg(field, name)? {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    fn string_arg(&self, field: &Field, name: &str) -> Option<String> {
        match self.arg(field, name)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn string_list_arg(&self, field: &Field, name: &str) -> Option<Vec<String>> {
        match self.arg(field, name)? {
            Value::List(items) => Some(
                items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            ),
            // A single value where a list is expected is coerced to a list.
            Value::String(s) => Some(vec![s]),
            _ => None,
        }
    }

    /// Whether `@skip`/`@include` leave the selection in.
    fn included(&self, directives: &[Positioned<Directive>]) -> bool {
        directives.iter().all(|d| {
            let condition = d
                .node
                .get_argument("if")
                .map(|v| self.value(v) == Value::Boolean(true));
            match d.node.name.node.as_str() {
                "skip" => condition != Some(true),
                "include" => condition != Some(false),
                _ => true,
            }
        })
    }

    /// The fields of `set`, fragments expanded, skipped ones left out.
    fn fields(&self, set: &'a SelectionSet) -> Vec<&'a Field> {
        let mut out = Vec::new();
        self.any(set, &mut HashSet::new(), &mut |field| {
            out.push(field);
            false
        });
        out
    }

    /// Whether `found` holds for one of the fields of `set` (fragments
    /// expanded, skipped ones left out), asked in order until it does.
    fn any(
        &self,
        set: &'a SelectionSet,
        entered: &mut HashSet<&'a str>,
        found: &mut impl FnMut(&'a Field) -> bool,
    ) -> bool {
        for item in &set.items {
            let hit = match &item.node {
                Selection::Field(field) => {
                    self.included(&field.node.directives) && found(&field.node)
                }
                Selection::InlineFragment(fragment) => {
                    self.included(&fragment.node.directives)
                        && self.any(&fragment.node.selection_set.node, entered, found)
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    // A fragment cycle is refused by validation; here it
                    // must only not loop.
                    if !self.included(&spread.node.directives) || !entered.insert(name) {
                        continue;
                    }
                    let hit = self
                        .doc
                        .fragments
                        .get(name)
                        .is_some_and(|f| self.any(&f.node.selection_set.node, entered, found));
                    entered.remove(name);
                    hit
                }
            };
            if hit {
                return true;
            }
        }
        false
    }

    /// Whether a field named `name` is selected anywhere below `set`.
    fn selects(&self, set: &'a SelectionSet, name: &str) -> bool {
        self.any(set, &mut HashSet::new(), &mut |f| {
            f.name.node == name || self.selects(&f.selection_set.node, name)
        })
    }
}

/// Refuses a request whose estimate breaks a limit, after it parsed and
/// validated and before it executes.
pub struct CostGuard(pub Arc<CostModel>);

impl ExtensionFactory for CostGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CostGuardRun {
            model: self.0.clone(),
            operation_name: Mutex::new(None),
            refusal: Mutex::new(None),
        })
    }
}

/// One request's run of the guard.
struct CostGuardRun {
    model: Arc<CostModel>,
    operation_name: Mutex<Option<String>>,
    refusal: Mutex<Option<ServerError>>,
}

#[async_trait::async_trait]
impl Extension for CostGuardRun {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // A std Mutex: nothing awaits while it is held.
        *self
            .operation_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = request.operation_name.clone();
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let operation_name = self
            .operation_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Only the accounts the caller may read count (and may be named in
        // a refusal), as the service will read only those.
        let caller = ctx.data_opt::<Arc<Caller>>();
        let visible = |account: &Account| caller.is_none_or(|c| c.can_read(account));
        let estimate = self
            .model
            .estimate(&doc, operation_name.as_deref(), variables, &visible);
        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) = self.model.check(&estimate);
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        // A document that is invalid gets its validation errors, not ours.
        let result = next.run(ctx).await?;
        match self
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(refusal) => Err(vec![refusal]),
            None => Ok(result),
        }
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use async_graphql::parser::parse_query;
    use serde_json::json;

    use super::*;

    /// The walk over `query`'s only operation with `variables`, asked `ask`.
    fn walked<T>(query: &str, variables: serde_json::Value, ask: impl Fn(&Walk<'_>) -> T) -> T {
        let doc = parse_query(query).unwrap();
        let (_, operation) = doc.operations.iter().next().unwrap();
        let variables = Variables::from_json(variables);
        ask(&Walk::new(&doc, &operation.node, &variables))
    }

    fn root(walk: &Walk<'_>) -> Vec<String> {
        let (_, operation) = walk.doc.operations.iter().next().unwrap();
        walk.fields(&operation.node.selection_set.node)
            .iter()
            .map(|f| f.name.node.to_string())
            .collect()
    }

    #[test]
    fn a_walk_finds_fields_behind_fragments_under_the_requests_conditions() {
        let query = "query($hide: Boolean = true) { sessions { nodes { sessionId ...F } } } \
                     fragment F on Session { ... on Session @skip(if: $hide) { ...G } } \
                     fragment G on Session { managedNode { instanceId } ...F }";
        let selects = |variables| {
            walked(query, variables, |walk| {
                let (_, operation) = walk.doc.operations.iter().next().unwrap();
                walk.selects(&operation.node.selection_set.node, "managedNode")
            })
        };
        // Skipped by the variable's default; kept when it is given false.
        assert!(!selects(json!({})));
        assert!(selects(json!({ "hide": false })));
        assert!(!selects(json!({ "hide": true })));
        // A fragment cycle (refused by validation) ends the walk.
        let cycle = "{ a: sessions { nodes { ...F } } } fragment F on Session { ...F }";
        assert!(!walked(cycle, json!({}), |walk| {
            let (_, operation) = walk.doc.operations.iter().next().unwrap();
            walk.selects(&operation.node.selection_set.node, "managedNode")
        }));
    }

    #[test]
    fn a_walks_arguments_and_root_fields_read_variables_then_defaults() {
        let query = "query($n: Int = 7, $m: Int, $no: Boolean = false) { \
                     a: sessions(first: $n) { nodes { sessionId } } \
                     b: sessions(first: $m) @include(if: $no) { nodes { sessionId } } \
                     ... @skip(if: $no) { c: session(account: \"x\", region: \"y\") { id } } }";
        let firsts = |variables| {
            walked(query, variables, |walk| {
                let (_, operation) = walk.doc.operations.iter().next().unwrap();
                let fields = walk.fields(&operation.node.selection_set.node);
                let firsts: Vec<_> = fields.iter().map(|f| walk.int_arg(f, "first")).collect();
                (root(walk), firsts)
            })
        };
        assert_eq!(
            firsts(json!({})),
            (
                vec!["sessions".into(), "session".into()],
                vec![Some(7), None]
            )
        );
        assert_eq!(firsts(json!({ "n": 3 })).1, [Some(3), None]);
        // A variable without a default, not given or null: no value.
        assert_eq!(
            firsts(json!({ "no": true })),
            (
                vec!["sessions".into(), "sessions".into()],
                vec![Some(7), None]
            )
        );
        assert_eq!(firsts(json!({ "no": true, "m": null })).1, [Some(7), None]);
        assert_eq!(firsts(json!({ "no": true, "m": 2 })).1, [Some(7), Some(2)]);
    }
}
