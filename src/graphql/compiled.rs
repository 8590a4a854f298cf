//! The compiled path: a page of sessions written straight to JSON.
//!
//! Executing a connection through async-graphql costs a future, a context
//! and a `Value` per field, about 850 of them for 50 sessions, then a pass
//! over the `Value` tree to serialize it. This module answers the common
//! shape of request without any of that: a query whose root fields are
//! `sessions` (and `__typename`), selecting scalar fields of the connection,
//! its edges, nodes and page info. Fields are collected as the spec's
//! CollectFields does (fragments, inline fragments, `@skip`, `@include`,
//! aliases, the same key selected twice) once per operation, into a
//! [`Plan`] kept with the parsed document; each `sessions` field calls the
//! same [`SessionService::list`] as the resolver, and the rows are written
//! to JSON from the model in the collected order.
//!
//! It takes only what it can answer exactly as the schema would, byte for
//! byte (a differential test compares both on generated documents), and
//! declines everything else, which then runs on the schema as before:
//!
//! - a document async-graphql has not yet validated for this operation
//!   (the executor records that; validation rules are async-graphql's, not
//!   repeated here), so the first request of each document runs there;
//! - anything beyond the subset: mutations, other root fields, `managedNode`
//!   (the DataLoader), introspection, other directives;
//! - an argument whose value does not coerce (the schema reports it), a
//!   variable not given, or a complexity bound over the limit (computed
//!   here as an upper bound of async-graphql's own figure, so declining
//!   when in doubt is the only error);
//! - a cursor that cannot be encoded (a bug): decided after the call, so
//!   the schema then calls again.
//!
//! A failed source becomes the same `errors` entry the resolver adds, and a
//! failed `sessions` field (a bad cursor, an unknown account) gets the
//! resolver's error. Where async-graphql 7 departs from the spec, this
//! follows async-graphql, so that answers do not change with the path: a
//! failed field is left out of its object rather than nulling it, and an
//! object with no field left (all skipped, or all failed) is `null`. One
//! difference remains, in the answer's favour: root fields come in document
//! order, as the spec orders them, where async-graphql orders them as their
//! resolvers finish (and `errors` likewise).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::parser::types::{
    Directive, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::resolver_utils::EnumType;
use async_graphql::{
    ErrorExtensions as _, InputType, Name, PathSegment, Pos, Positioned, ServerError, Variables,
};
use async_graphql_value::{ConstValue, Value as AstValue};
use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use super::query::SessionsArgs;
use super::types::{AccessType, SessionFilterInput, SessionStatus, node_id};
use crate::cursor::{Cursor, CursorCodec, CursorWriter};
use crate::paging::RequestBudget;
use crate::sessions::{Caller, Edge, ListArgs, Listing, Located, SessionService};

/// Deepest nesting of fragment spreads and inline fragments followed (a
/// validated document has no cycles; this only bounds the walk).
const MAX_FRAGMENT_DEPTH: usize = 16;

/// What the compiled path made of a request.
pub struct Answer {
    /// The response's JSON up to the end of `data` (`{"data":...`, not
    /// closed: the caller adds `extensions` and `errors`).
    pub body: Vec<u8>,
    /// Whether `data` is null (every root field failed).
    pub data_null: bool,
    /// Field errors, as the schema would report them.
    pub errors: Vec<ServerError>,
}

/// Size of the last answer, plus an eighth: the next one's first
/// allocation, so a page is not copied through a dozen reallocations.
static SIZE_HINT: AtomicUsize = AtomicUsize::new(4096);

/// What an operation selects, collected once: kept with its document
/// (`super::executor::Parsed`) and reused by every request of the same
/// operation whose `@skip`/`@include` variables have the values it was
/// collected under. A request then only coerces its arguments
/// ([`Plan::prepare`]).
pub struct Plan {
    roots: Vec<Sel<Root>>,
    /// The variables `@skip` and `@include` conditions read while
    /// collecting, with the values read: what the selection depends on.
    conditions: Vec<(Name, bool)>,
}

/// A request the compiled path takes: its operation's plan and the
/// arguments of each root field (`Some` for `sessions`), coerced.
pub struct Prepared {
    plan: Arc<Plan>,
    args: Vec<Option<ListArgs>>,
}

/// One collected field: its response key and what to write there.
#[derive(Clone)]
struct Sel<K> {
    key: Box<str>,
    /// `"key":`, written before the value.
    json_key: Box<[u8]>,
    kind: K,
}

impl<K> Sel<K> {
    fn new(key: &str, kind: K) -> Self {
        let mut json_key = Vec::with_capacity(key.len() + 3);
        json_key.push(b'"');
        json_key.extend_from_slice(key.as_bytes());
        json_key.extend_from_slice(b"\":");
        Self {
            key: key.into(),
            json_key: json_key.into_boxed_slice(),
            kind,
        }
    }
}

enum Root {
    /// `__typename`, selected this many times under its key.
    Typename(usize),
    Sessions(Box<SessionsField>),
}

struct SessionsField {
    pos: Pos,
    /// The field's arguments as written: coerced per request, as
    /// variables change.
    arguments: Vec<(Positioned<Name>, Positioned<AstValue>)>,
    /// Fields selected below it, each fragment counted where it is spread.
    children: usize,
    /// Whether `pageInfo { hasNextPage }` is selected (a look-ahead).
    want_has_next: bool,
    selection: Vec<Sel<Conn>>,
}

enum Conn {
    Typename,
    Edges(Vec<Sel<EdgeField>>),
    Nodes(Node),
    PageInfo(Vec<Sel<PageInfoField>>),
}

enum EdgeField {
    Typename,
    Cursor,
    Node(Node),
}

/// The fields selected on a session, and how to write them from the
/// session's [`Memo`] when they are worth one.
struct Node {
    fields: Vec<Sel<SessionField>>,
    /// `None` writes every field directly.
    memo: Option<Vec<Segment>>,
}

/// A stretch of a session's fields written from its [`Memo`].
enum Segment {
    /// Memo pairs `first..=last`, copied as they are: fields selected
    /// under their own names, one after the other in the memo's order.
    Pairs { first: usize, last: usize },
    /// `fields[i]`: its key, then its value, from the memo when it holds it.
    Field(usize),
}

impl Node {
    fn new(fields: Vec<Sel<SessionField>>) -> Self {
        let memoized = fields
            .iter()
            .filter(|f| f.kind.memo_index().is_some())
            .count();
        let memo = (memoized >= Memo::MIN_FIELDS).then(|| {
            let mut segments = Vec::new();
            for (i, field) in fields.iter().enumerate() {
                let unaliased = field.kind.memo_index().filter(|&m| {
                    Memo::FIELDS
                        .get(m)
                        .is_some_and(|(name, _)| *name == &*field.key)
                });
                match (unaliased, segments.last_mut()) {
                    (Some(m), Some(Segment::Pairs { last, .. })) if *last + 1 == m => *last = m,
                    (Some(m), _) => segments.push(Segment::Pairs { first: m, last: m }),
                    (None, _) => segments.push(Segment::Field(i)),
                }
            }
            segments
        });
        Self { fields, memo }
    }
}

enum PageInfoField {
    Typename,
    HasPreviousPage,
    HasNextPage,
    StartCursor,
    EndCursor,
}

#[derive(Clone)]
enum SessionField {
    Typename,
    Id,
    Account(Vec<Sel<AccountField>>),
    Region,
    SessionId,
    Target,
    Status,
    StartDate,
    EndDate,
    DocumentName,
    Owner,
    Reason,
    Details,
    OutputUrl(Vec<Sel<OutputUrlField>>),
    MaxSessionDuration,
    AccessType,
    DurationSeconds,
    OwnerName,
}

#[derive(Clone)]
enum AccountField {
    Typename,
    Id,
    Alias,
    Regions,
}

#[derive(Clone)]
enum OutputUrlField {
    Typename,
    S3OutputUrl,
    CloudWatchOutputUrl,
}

/// A field's arguments as the document writes them.
type Arguments = [(Positioned<Name>, Positioned<AstValue>)];

/// The fields of one response key at one level, in document order.
struct Group<'a> {
    key: &'a str,
    name: &'a str,
    fields: Vec<&'a Positioned<Field>>,
}

/// A request's variables, for the operation that declares them (with
/// their defaults): what conditions and arguments read.
#[derive(Clone, Copy)]
struct Given<'a> {
    operation: &'a OperationDefinition,
    variables: &'a Variables,
}

/// What collecting fields needs: the document, and the variables that
/// `@skip` and `@include` read, noting each one read.
struct Collector<'a> {
    document: &'a ExecutableDocument,
    given: Given<'a>,
    /// The `@skip`/`@include` variables read so far, with their values.
    conditions: std::cell::RefCell<Vec<(Name, bool)>>,
}

impl Plan {
    /// The operation's plan, collected under `variables`, when the
    /// compiled path can answer it exactly; `None` declines. `operation`
    /// must be the operation the request picks, already validated by
    /// async-graphql.
    pub fn new(
        document: &ExecutableDocument,
        operation: &OperationDefinition,
        variables: &Variables,
    ) -> Option<Self> {
        if operation.ty != OperationType::Query || !operation.directives.is_empty() {
            return None;
        }
        let collector = Collector::new(document, operation, variables);
        let mut roots = Vec::new();
        for group in collector.collect(&[&operation.selection_set.node], "Query")? {
            let kind = match group.name {
                "__typename" => Root::Typename(group.fields.len()),
                // The same `sessions` key twice runs twice on the schema
                // (each occurrence its own call and errors): the schema's.
                "sessions" if group.fields.len() == 1 => {
                    Root::Sessions(Box::new(collector.sessions(&group)?))
                }
                _ => return None,
            };
            roots.push(Sel::new(group.key, kind));
        }
        Some(Self {
            roots,
            conditions: collector.conditions.into_inner(),
        })
    }

    /// About the bytes the plan takes: its nodes, keys, arguments and
    /// conditions. Aliases and fragments spread in several places make a
    /// plan larger than its text; this is what the caller bounds before
    /// keeping it.
    pub fn bytes(&self) -> usize {
        fn sels<K>(sels: &[Sel<K>], kind: impl Fn(&K) -> usize) -> usize {
            sels.iter()
                .map(|s| {
                    std::mem::size_of::<Sel<K>>() + s.key.len() + s.json_key.len() + kind(&s.kind)
                })
                .sum()
        }
        fn node(node: &Node) -> usize {
            let segments = node
                .memo
                .as_ref()
                .map_or(0, |m| m.len() * std::mem::size_of::<Segment>());
            segments
                + sels(&node.fields, |field| match field {
                    SessionField::Account(fields) => sels(fields, |_| 0),
                    SessionField::OutputUrl(fields) => sels(fields, |_| 0),
                    _ => 0,
                })
        }
        let roots = sels(&self.roots, |root| match root {
            Root::Typename(_) => 0,
            Root::Sessions(field) => {
                // The arguments' syntax, about: their text is not kept.
                let arguments = field.arguments.len() * 256;
                arguments
                    + sels(&field.selection, |conn| match conn {
                        Conn::Typename => 0,
                        Conn::Edges(fields) => sels(fields, |edge| match edge {
                            EdgeField::Node(n) => node(n),
                            _ => 0,
                        }),
                        Conn::Nodes(n) => node(n),
                        Conn::PageInfo(fields) => sels(fields, |_| 0),
                    })
            }
        });
        std::mem::size_of::<Self>()
            + roots
            + self.conditions.len() * std::mem::size_of::<(Name, bool)>()
    }

    /// Whether the plan is the one collecting under `variables` would
    /// give: every condition it read has the same value there.
    pub fn holds(&self, operation: &OperationDefinition, variables: &Variables) -> bool {
        let given = Given {
            operation,
            variables,
        };
        self.conditions.iter().all(|(name, value)| {
            matches!(given.variable(name), Some(ConstValue::Boolean(b)) if b == *value)
        })
    }

    /// The request of this plan with `variables`: its arguments coerced
    /// and its complexity checked; `None` declines.
    pub fn prepare(
        self: Arc<Self>,
        operation: &OperationDefinition,
        variables: &Variables,
        max_complexity: usize,
    ) -> Option<Prepared> {
        let given = Given {
            operation,
            variables,
        };
        let mut complexity = 0usize;
        let mut args = Vec::with_capacity(self.roots.len());
        for root in &self.roots {
            match &root.kind {
                Root::Typename(n) => {
                    complexity = complexity.saturating_add(*n);
                    args.push(None);
                }
                Root::Sessions(field) => {
                    let (list_args, complexity_of) = given.arguments(field)?;
                    complexity = complexity.saturating_add(complexity_of);
                    args.push(Some(list_args));
                }
            }
        }
        (complexity <= max_complexity).then_some(Prepared { plan: self, args })
    }
}

impl Prepared {
    /// Runs the `sessions` fields concurrently for `caller` within
    /// `budget` and writes the answer; `None` when a cursor could not be
    /// encoded (the schema then answers, with its error).
    pub async fn run(
        self,
        service: &SessionService,
        caller: &Caller,
        budget: &RequestBudget,
    ) -> Option<Answer> {
        let Self { plan, args } = self;
        let listings = futures_util::future::join_all(plan.roots.iter().zip(args).map(
            |(root, args)| async move {
                let (Root::Sessions(_), Some(args)) = (&root.kind, args) else {
                    return None;
                };
                let resumed = args.after.is_some();
                let span = tracing::info_span!(
                    target: "async_graphql::graphql",
                    "field",
                    path = &*root.key,
                    parent_type = "Query",
                );
                let listing = service.list(caller, args, budget).instrument(span).await;
                Some((listing, resumed))
            },
        ))
        .await;

        // As async-graphql has it: a failed field is left out, with its
        // error, and an object left with no field at all is null.
        let mut errors = Vec::new();
        let mut out = Json::with_capacity(SIZE_HINT.load(Ordering::Relaxed).clamp(1024, 4 << 20));
        out.0.extend_from_slice(b"{\"data\":");
        let data_start = out.0.len();
        out.open();
        for (root, listing) in plan.roots.iter().zip(listings) {
            match (&root.kind, listing) {
                (Root::Typename(_), _) => {
                    out.key(&root.json_key);
                    out.string("Query");
                }
                (Root::Sessions(field), Some((Ok(mut listing), resumed))) => {
                    for (source, failure) in std::mem::take(&mut listing.failures) {
                        errors.push(super::query::source_error(
                            field.pos, &root.key, &source, failure,
                        ));
                    }
                    out.key(&root.json_key);
                    let page = Page::new(listing, resumed, service.cursors());
                    page.write(&field.selection, &mut out)?;
                }
                (Root::Sessions(field), Some((Err(e), _))) => {
                    let mut error = e.extend().into_server_error(field.pos);
                    error.path = vec![PathSegment::Field(root.key.to_string())];
                    errors.push(error);
                }
                (Root::Sessions(_), None) => return None,
            }
        }
        out.close();
        let data_null = out.0[data_start..] == *b"{}";
        if data_null {
            out.0.truncate(data_start);
            out.null();
        }
        SIZE_HINT.store(out.0.len() + out.0.len() / 8, Ordering::Relaxed);
        Some(Answer {
            body: out.0,
            data_null,
            errors,
        })
    }
}

impl Given<'_> {
    /// A variable's value as async-graphql resolves it: given, else its
    /// default, else null if its type is nullable; `None` when none of
    /// these (the schema then reports it).
    fn variable(&self, name: &str) -> Option<ConstValue> {
        let definition = self
            .operation
            .variable_definitions
            .iter()
            .find(|d| d.node.name.node == name)?;
        self.variables
            .get(&definition.node.name.node)
            .or_else(|| definition.node.default_value())
            .cloned()
    }

    /// The value of argument `name` among a field's `arguments` with its
    /// variables substituted: `Some(None)` when not given, `None` when a
    /// variable does not resolve.
    fn value(&self, arguments: &Arguments, name: &str) -> Option<Option<ConstValue>> {
        match arguments
            .iter()
            .find(|(n, _)| n.node == name)
            .map(|(_, value)| value)
        {
            None => Some(None),
            Some(value) => value
                .node
                .clone()
                .into_const_with(|var| self.variable(&var).ok_or(()))
                .ok()
                .map(Some),
        }
    }

    /// An argument, coerced as the resolver's argument of type `T` is;
    /// `None` when it does not coerce.
    fn argument<T: InputType>(&self, arguments: &Arguments, name: &str) -> Option<T> {
        T::parse(self.value(arguments, name)?).ok()
    }

    /// Whether argument `name`, an input object of type `T`, names only
    /// fields `T` has (`None`: it does not resolve).
    fn known_fields<T: InputType + Default>(
        &self,
        arguments: &Arguments,
        name: &str,
    ) -> Option<bool> {
        let Some(ConstValue::Object(given)) = self.value(arguments, name)? else {
            return Some(true);
        };
        // Every field, null or not, is in the value of a default one.
        let ConstValue::Object(known) = T::default().to_value() else {
            return Some(false);
        };
        Some(given.keys().all(|key| known.contains_key(key)))
    }

    /// A `sessions` field's arguments with these variables, and the upper
    /// bound of its complexity; `None` when they do not coerce.
    fn arguments(&self, field: &SessionsField) -> Option<(ListArgs, usize)> {
        let arguments = &field.arguments;
        let args = SessionsArgs {
            state: self.argument(arguments, "state")?,
            filter: self.argument(arguments, "filter")?,
            accounts: self.argument(arguments, "accounts")?,
            regions: self.argument(arguments, "regions")?,
            first: self.argument(arguments, "first")?,
            after: self.argument(arguments, "after")?,
            page_size: self.argument(arguments, "pageSize")?,
            last: self.argument(arguments, "last")?,
            before: self.argument(arguments, "before")?,
        };
        // Parsing an input object ignores fields it does not know, where
        // validation refuses them: only known ones, or the schema says so.
        if !self.known_fields::<SessionFilterInput>(arguments, "filter")? {
            return None;
        }
        let complexity = super::query::connection_complexity(args.first, field.children);
        // A filter the model refuses is the resolver's error to report.
        let args = args.into_list_args(field.want_has_next).ok()?;
        Some((args, complexity))
    }
}

impl<'a> Collector<'a> {
    fn new(
        document: &'a ExecutableDocument,
        operation: &'a OperationDefinition,
        variables: &'a Variables,
    ) -> Self {
        Self {
            document,
            given: Given {
                operation,
                variables,
            },
            conditions: Default::default(),
        }
    }

    /// The fields `sets` select on an object of type `type_name`, grouped by
    /// response key in order of first appearance (CollectFields).
    fn collect(&self, sets: &[&'a SelectionSet], type_name: &str) -> Option<Vec<Group<'a>>> {
        let mut groups = Vec::new();
        for set in sets {
            self.walk(set, type_name, &mut groups, 0)?;
        }
        Some(groups)
    }

    fn walk(
        &self,
        set: &'a SelectionSet,
        type_name: &str,
        groups: &mut Vec<Group<'a>>,
        depth: usize,
    ) -> Option<()> {
        if depth > MAX_FRAGMENT_DEPTH {
            return None;
        }
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    if !self.included(&field.node.directives)? {
                        continue;
                    }
                    let key = field.node.response_key().node.as_str();
                    let name = field.node.name.node.as_str();
                    match groups.iter_mut().find(|g| g.key == key) {
                        // Same key, another field: not valid; let the schema say so.
                        Some(group) if group.name != name => return None,
                        Some(group) => group.fields.push(field),
                        None => groups.push(Group {
                            key,
                            name,
                            fields: vec![field],
                        }),
                    }
                }
                Selection::FragmentSpread(spread) => {
                    if !self.included(&spread.node.directives)? {
                        continue;
                    }
                    let fragment = self
                        .document
                        .fragments
                        .get(&spread.node.fragment_name.node)?;
                    let fragment = &fragment.node;
                    if !fragment.directives.is_empty()
                        || !applies(&fragment.type_condition.node.on.node, type_name)
                    {
                        return None;
                    }
                    self.walk(&fragment.selection_set.node, type_name, groups, depth + 1)?;
                }
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    if !self.included(&inline.directives)? {
                        continue;
                    }
                    if let Some(condition) = &inline.type_condition
                        && !applies(&condition.node.on.node, type_name)
                    {
                        return None;
                    }
                    self.walk(&inline.selection_set.node, type_name, groups, depth + 1)?;
                }
            }
        }
        Some(())
    }

    /// Whether `@skip` and `@include` keep a selection; `None` for any other
    /// directive or a condition that is not a Boolean.
    fn included(&self, directives: &[Positioned<Directive>]) -> Option<bool> {
        let mut keep = true;
        for directive in directives {
            let directive = &directive.node;
            let condition = match directive.get_argument("if").map(|v| &v.node)? {
                AstValue::Boolean(b) => *b,
                AstValue::Variable(name) => match self.given.variable(name)? {
                    ConstValue::Boolean(b) => {
                        let mut conditions = self.conditions.borrow_mut();
                        if !conditions.iter().any(|(read, _)| read == name) {
                            conditions.push((name.clone(), b));
                        }
                        b
                    }
                    _ => return None,
                },
                _ => return None,
            };
            match directive.name.node.as_str() {
                "skip" => keep &= !condition,
                "include" => keep &= condition,
                _ => return None,
            }
        }
        Some(keep)
    }

    /// A `sessions` field's plan: its arguments as written, its collected
    /// selection and the size of that selection.
    fn sessions(&self, group: &Group<'a>) -> Option<SessionsField> {
        let field = &group.fields[0];
        let sets: Vec<&SelectionSet> = group
            .fields
            .iter()
            .map(|f| &f.node.selection_set.node)
            .collect();
        let mut children = 0usize;
        for set in &sets {
            children = children.saturating_add(self.size(set, 0)?);
        }
        let selection = self.connection(&sets)?;
        let want_has_next = selection.iter().any(|s| match &s.kind {
            Conn::PageInfo(fields) => fields
                .iter()
                .any(|f| matches!(f.kind, PageInfoField::HasNextPage)),
            _ => false,
        });
        Some(SessionsField {
            pos: field.pos,
            arguments: field.node.arguments.clone(),
            children,
            want_has_next,
            selection,
        })
    }

    /// Fields selected in `set` and below, each fragment counted where it is
    /// spread: at least async-graphql's complexity of the set.
    fn size(&self, set: &'a SelectionSet, depth: usize) -> Option<usize> {
        if depth > MAX_FRAGMENT_DEPTH {
            return None;
        }
        let mut total = 0usize;
        for selection in &set.items {
            let n = match &selection.node {
                Selection::Field(field) => {
                    1usize.saturating_add(self.size(&field.node.selection_set.node, depth + 1)?)
                }
                Selection::FragmentSpread(spread) => {
                    let fragment = self
                        .document
                        .fragments
                        .get(&spread.node.fragment_name.node)?;
                    self.size(&fragment.node.selection_set.node, depth + 1)?
                }
                Selection::InlineFragment(inline) => {
                    self.size(&inline.node.selection_set.node, depth + 1)?
                }
            };
            total = total.saturating_add(n);
        }
        Some(total)
    }

    /// The selection sets of the fields of `group`: what is selected below
    /// them.
    fn below(group: &Group<'a>) -> Vec<&'a SelectionSet> {
        group
            .fields
            .iter()
            .map(|f| &f.node.selection_set.node)
            .collect()
    }

    fn connection(&self, sets: &[&'a SelectionSet]) -> Option<Vec<Sel<Conn>>> {
        fields(self.collect(sets, "SessionConnection")?, |group| {
            Some(match group.name {
                "__typename" => Conn::Typename,
                "edges" => Conn::Edges(self.edge(&Self::below(group))?),
                "nodes" => Conn::Nodes(Node::new(self.session(&Self::below(group))?)),
                "pageInfo" => Conn::PageInfo(self.page_info(&Self::below(group))?),
                _ => return None,
            })
        })
    }

    fn edge(&self, sets: &[&'a SelectionSet]) -> Option<Vec<Sel<EdgeField>>> {
        fields(self.collect(sets, "SessionEdge")?, |group| {
            Some(match group.name {
                "__typename" => EdgeField::Typename,
                "cursor" => EdgeField::Cursor,
                "node" => EdgeField::Node(Node::new(self.session(&Self::below(group))?)),
                _ => return None,
            })
        })
    }

    fn page_info(&self, sets: &[&'a SelectionSet]) -> Option<Vec<Sel<PageInfoField>>> {
        leaves(self.collect(sets, "PageInfo")?, |name| {
            Some(match name {
                "__typename" => PageInfoField::Typename,
                "hasPreviousPage" => PageInfoField::HasPreviousPage,
                "hasNextPage" => PageInfoField::HasNextPage,
                "startCursor" => PageInfoField::StartCursor,
                "endCursor" => PageInfoField::EndCursor,
                _ => return None,
            })
        })
    }

    fn session(&self, sets: &[&'a SelectionSet]) -> Option<Vec<Sel<SessionField>>> {
        fields(self.collect(sets, "Session")?, |group| {
            Some(match group.name {
                "__typename" => SessionField::Typename,
                "id" => SessionField::Id,
                "account" => SessionField::Account(leaves(
                    self.collect(&Self::below(group), "Account")?,
                    |name| {
                        Some(match name {
                            "__typename" => AccountField::Typename,
                            "id" => AccountField::Id,
                            "alias" => AccountField::Alias,
                            "regions" => AccountField::Regions,
                            _ => return None,
                        })
                    },
                )?),
                "region" => SessionField::Region,
                "sessionId" => SessionField::SessionId,
                "target" => SessionField::Target,
                "status" => SessionField::Status,
                "startDate" => SessionField::StartDate,
                "endDate" => SessionField::EndDate,
                "documentName" => SessionField::DocumentName,
                "owner" => SessionField::Owner,
                "reason" => SessionField::Reason,
                "details" => SessionField::Details,
                "outputUrl" => SessionField::OutputUrl(leaves(
                    self.collect(&Self::below(group), "OutputUrl")?,
                    |name| {
                        Some(match name {
                            "__typename" => OutputUrlField::Typename,
                            "s3OutputUrl" => OutputUrlField::S3OutputUrl,
                            "cloudWatchOutputUrl" => OutputUrlField::CloudWatchOutputUrl,
                            _ => return None,
                        })
                    },
                )?),
                "maxSessionDuration" => SessionField::MaxSessionDuration,
                "accessType" => SessionField::AccessType,
                "durationSeconds" => SessionField::DurationSeconds,
                "ownerName" => SessionField::OwnerName,
                // `managedNode` goes through the DataLoader: the schema's.
                _ => return None,
            })
        })
    }
}

/// Each group mapped to what to write for it; `None` if any cannot be.
fn fields<'a, K>(
    groups: Vec<Group<'a>>,
    mut kind: impl FnMut(&Group<'a>) -> Option<K>,
) -> Option<Vec<Sel<K>>> {
    groups
        .into_iter()
        .map(|group| Some(Sel::new(group.key, kind(&group)?)))
        .collect()
}

/// Leaf groups mapped by field name; `None` if any name is not known.
fn leaves<'a, K>(groups: Vec<Group<'a>>, kind: impl Fn(&str) -> Option<K>) -> Option<Vec<Sel<K>>> {
    fields(groups, |group| kind(group.name))
}

/// Whether a fragment on `condition` applies to an object of `type_name`
/// (Session is the only type with an interface, `Node`).
fn applies(condition: &str, type_name: &str) -> bool {
    condition == type_name || (type_name == "Session" && condition == "Node")
}

/// A listing being written: its edges and their cursors, each encoded at
/// most once.
struct Page<'c> {
    edges: Vec<Edge>,
    /// Where each edge's cursor was written in the output already.
    cursors: Vec<Option<std::ops::Range<usize>>>,
    /// The positions of the edges before `applied`, encoded: the next
    /// cursor costs re-encoding only the sources its edge moved.
    writer: CursorWriter<'c>,
    applied: usize,
    has_previous_page: bool,
    has_next_page: Option<bool>,
    resume: Option<Cursor>,
    codec: &'c CursorCodec,
}

impl<'c> Page<'c> {
    fn new(listing: Listing, has_previous_page: bool, codec: &'c Arc<CursorCodec>) -> Self {
        Self {
            cursors: vec![None; listing.edges.len()],
            writer: codec.writer(listing.fingerprint, listing.sources),
            applied: 0,
            edges: listing.edges,
            has_previous_page,
            has_next_page: listing.has_next_page,
            resume: listing.resume,
            codec,
        }
    }

    /// Writes the cursor of edge `i` as a JSON string: encoded the first
    /// time, copied from where it was written after that.
    fn cursor(&mut self, i: usize, out: &mut Json) -> Option<()> {
        out.0.push(b'"');
        match self.cursors[i].clone() {
            Some(range) => out.0.extend_from_within(range),
            None => {
                if self.applied > i {
                    // Asked for out of order (`endCursor` before the
                    // edges): start over from the first edge, whose
                    // changes set every source.
                    self.applied = 0;
                }
                while self.applied <= i {
                    let writer = &mut self.writer;
                    self.edges[self.applied]
                        .changes
                        .each(|source, position| writer.set(source, position));
                    self.applied += 1;
                }
                let start = out.0.len();
                self.writer.encode_into(&mut out.0).ok()?;
                self.cursors[i] = Some(start..out.0.len());
            }
        }
        // base64url: nothing to escape.
        out.0.push(b'"');
        Some(())
    }

    fn write(mut self, selection: &[Sel<Conn>], out: &mut Json) -> Option<()> {
        if selection.is_empty() {
            out.null();
            return Some(());
        }
        out.open();
        for sel in selection {
            out.key(&sel.json_key);
            match &sel.kind {
                Conn::Typename => out.string("SessionConnection"),
                Conn::Edges(fields) => {
                    out.list_open();
                    for i in 0..self.edges.len() {
                        out.item(i);
                        if fields.is_empty() {
                            out.null();
                            continue;
                        }
                        out.open();
                        for field in fields {
                            out.key(&field.json_key);
                            match &field.kind {
                                EdgeField::Typename => out.string("SessionEdge"),
                                EdgeField::Cursor => self.cursor(i, out)?,
                                EdgeField::Node(fields) => {
                                    write_session(&self.edges[i].node, fields, out);
                                }
                            }
                        }
                        out.close();
                    }
                    out.list_close();
                }
                Conn::Nodes(fields) => {
                    out.list_open();
                    for (i, edge) in self.edges.iter().enumerate() {
                        out.item(i);
                        write_session(&edge.node, fields, out);
                    }
                    out.list_close();
                }
                Conn::PageInfo(fields) => self.write_page_info(fields, out)?,
            }
        }
        out.close();
        Some(())
    }

    fn write_page_info(&mut self, fields: &[Sel<PageInfoField>], out: &mut Json) -> Option<()> {
        if fields.is_empty() {
            out.null();
            return Some(());
        }
        out.open();
        for field in fields {
            out.key(&field.json_key);
            match field.kind {
                PageInfoField::Typename => out.string("PageInfo"),
                PageInfoField::HasPreviousPage => out.bool(self.has_previous_page),
                // As the resolver: `true` ("maybe") should it not be known.
                PageInfoField::HasNextPage => out.bool(self.has_next_page.unwrap_or(true)),
                PageInfoField::StartCursor => match self.edges.len() {
                    0 => out.null(),
                    _ => self.cursor(0, out)?,
                },
                PageInfoField::EndCursor => match self.edges.len() {
                    0 => match &self.resume {
                        Some(resume) => out.string(&self.codec.encode(resume).ok()?),
                        None => out.null(),
                    },
                    n => self.cursor(n - 1, out)?,
                },
            }
        }
        out.close();
        Some(())
    }
}

fn write_session(located: &Located, node: &Node, out: &mut Json) {
    if node.fields.is_empty() {
        out.null();
        return;
    }
    out.open();
    let memo = node.memo.as_ref().and_then(|segments| {
        let slot = located.session.memo()?;
        Some((segments, Memo(slot.get_or_init(|| Memo::render(located)))))
    });
    match memo {
        Some((segments, memo)) => {
            for segment in segments {
                match *segment {
                    Segment::Pairs { first, last } => match memo.pairs(first, last) {
                        // Each pair starts with its comma: not the object's first.
                        Some(pairs) if out.0.last() == Some(&b'{') => {
                            out.0.extend_from_slice(pairs.get(1..).unwrap_or_default());
                        }
                        Some(pairs) => out.0.extend_from_slice(pairs),
                        None => {
                            for m in first..=last {
                                if let Some((name, field)) = Memo::FIELDS.get(m) {
                                    out.key_str(name);
                                    write_value(located, field, out);
                                }
                            }
                        }
                    },
                    Segment::Field(i) => {
                        let Some(field) = node.fields.get(i) else {
                            continue;
                        };
                        out.key(&field.json_key);
                        match field.kind.memo_index().and_then(|m| memo.value(m)) {
                            Some(value) => out.0.extend_from_slice(value),
                            None => write_value(located, &field.kind, out),
                        }
                    }
                }
            }
        }
        None => {
            for field in &node.fields {
                out.key(&field.json_key);
                write_value(located, &field.kind, out);
            }
        }
    }
    out.close();
}

/// The JSON value of `field` of `located`.
fn write_value(located: &Located, field: &SessionField, out: &mut Json) {
    let session = &located.session;
    match field {
        SessionField::Typename => out.string("Session"),
        SessionField::Id => {
            out.0.push(b'"');
            node_id::encode_into(
                &located.account.id,
                &located.region,
                &session.session_id,
                &mut out.0,
            );
            // base64url: nothing to escape.
            out.0.push(b'"');
        }
        SessionField::Account(fields) if fields.is_empty() => out.null(),
        SessionField::Account(fields) => {
            out.open();
            for field in fields {
                out.key(&field.json_key);
                match field.kind {
                    AccountField::Typename => out.string("Account"),
                    AccountField::Id => out.string(located.account.id.as_str()),
                    AccountField::Alias => out.string(&located.account.alias),
                    AccountField::Regions => {
                        out.list_open();
                        for (i, region) in located.account.regions.iter().enumerate() {
                            out.item(i);
                            out.string(region.as_str());
                        }
                        out.list_close();
                    }
                }
            }
            out.close();
        }
        SessionField::Region => out.string(located.region.as_str()),
        SessionField::SessionId => out.string(session.session_id.as_str()),
        SessionField::Target => out.opt_string(session.target.as_deref()),
        SessionField::Status => {
            out.opt_enum(session.status.map(SessionStatus::from));
        }
        SessionField::StartDate => out.opt_date(session.start_date.as_ref()),
        SessionField::EndDate => out.opt_date(session.end_date.as_ref()),
        SessionField::DocumentName => out.opt_string(session.document_name.as_deref()),
        SessionField::Owner => out.opt_string(session.owner.as_deref()),
        SessionField::Reason => out.opt_string(session.reason.as_deref()),
        SessionField::Details => out.opt_string(session.details.as_deref()),
        SessionField::OutputUrl(fields) => match &session.output_url {
            None => out.null(),
            Some(_) if fields.is_empty() => out.null(),
            Some(url) => {
                out.open();
                for field in fields {
                    out.key(&field.json_key);
                    match field.kind {
                        OutputUrlField::Typename => out.string("OutputUrl"),
                        OutputUrlField::S3OutputUrl => {
                            out.opt_string(url.s3_output_url.as_deref());
                        }
                        OutputUrlField::CloudWatchOutputUrl => {
                            out.opt_string(url.cloud_watch_output_url.as_deref());
                        }
                    }
                }
                out.close();
            }
        },
        SessionField::MaxSessionDuration => match session.max_session_duration_minutes {
            Some(n) => out.number(i64::from(n)),
            None => out.null(),
        },
        SessionField::AccessType => out.opt_enum(session.access_type.map(AccessType::from)),
        SessionField::DurationSeconds => match super::types::duration_seconds(session) {
            Some(n) => out.number(n),
            None => out.null(),
        },
        SessionField::OwnerName => {
            out.opt_string(super::types::owner_name(session.owner.as_deref()));
        }
    }
}

impl SessionField {
    /// Where the field's value is in a [`Memo`] (its place in
    /// [`Memo::FIELDS`]); `None` for what is not kept there.
    fn memo_index(&self) -> Option<usize> {
        Some(match self {
            Self::Id => 0,
            Self::Region => 1,
            Self::SessionId => 2,
            Self::Target => 3,
            Self::Status => 4,
            Self::StartDate => 5,
            Self::EndDate => 6,
            Self::DocumentName => 7,
            Self::Owner => 8,
            Self::Reason => 9,
            Self::Details => 10,
            Self::MaxSessionDuration => 11,
            Self::AccessType => 12,
            Self::DurationSeconds => 13,
            Self::OwnerName => 14,
            Self::Typename | Self::Account(_) | Self::OutputUrl(_) => return None,
        })
    }
}

/// A session's fields that depend on the session alone, written as JSON
/// the first time a request writes the session from its cached page and
/// copied by every later request (the slot is the page's,
/// [`crate::upstream::Memos`]).
///
/// Laid out as the end offset of each pair (`u32`, little-endian), then
/// the pairs `,"name":value` in the order of [`Memo::FIELDS`] (the
/// schema's). A selection that names fields as the memo does, in its order,
/// copies them as one stretch; any other takes each value alone. The global
/// `id` and `region` are among them: a page is read from one account and
/// region only (the page cache keys it so).
#[derive(Clone, Copy)]
struct Memo<'m>(&'m [u8]);

impl<'m> Memo<'m> {
    /// Each field with its schema name, in the memo's order.
    const FIELDS: [(&'static str, SessionField); 15] = [
        ("id", SessionField::Id),
        ("region", SessionField::Region),
        ("sessionId", SessionField::SessionId),
        ("target", SessionField::Target),
        ("status", SessionField::Status),
        ("startDate", SessionField::StartDate),
        ("endDate", SessionField::EndDate),
        ("documentName", SessionField::DocumentName),
        ("owner", SessionField::Owner),
        ("reason", SessionField::Reason),
        ("details", SessionField::Details),
        ("maxSessionDuration", SessionField::MaxSessionDuration),
        ("accessType", SessionField::AccessType),
        ("durationSeconds", SessionField::DurationSeconds),
        ("ownerName", SessionField::OwnerName),
    ];
    const HEADER: usize = 4 * Self::FIELDS.len();
    /// A selection of fewer of these fields writes them directly: a memo
    /// costs about what writing all its fields once does, so it pays back
    /// sooner the more of them each request asks for.
    const MIN_FIELDS: usize = 4;

    fn render(located: &Located) -> Box<[u8]> {
        let mut out = Json::with_capacity(Self::HEADER + 768);
        out.0.resize(Self::HEADER, 0);
        for (i, (name, field)) in Self::FIELDS.iter().enumerate() {
            out.0.extend_from_slice(b",\"");
            out.0.extend_from_slice(name.as_bytes());
            out.0.extend_from_slice(b"\":");
            write_value(located, field, &mut out);
            // A memo past 4 GiB cannot be: `end` saturates, and reading
            // then declines, so the field is written directly.
            let end = u32::try_from(out.0.len()).unwrap_or(u32::MAX).to_le_bytes();
            if let Some(slot) = out.0.get_mut(4 * i..4 * i + 4) {
                slot.copy_from_slice(&end);
            }
        }
        out.0.into_boxed_slice()
    }

    /// Where pair `i` ends.
    fn end(self, i: usize) -> Option<usize> {
        let bytes = self.0.get(4 * i..4 * i + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
    }

    /// Pairs `first..=last`, each with its leading comma.
    fn pairs(self, first: usize, last: usize) -> Option<&'m [u8]> {
        let start = match first {
            0 => Self::HEADER,
            _ => self.end(first - 1)?,
        };
        self.0.get(start..self.end(last)?)
    }

    /// The value of field `i`: its pair after `,"name":`.
    fn value(self, i: usize) -> Option<&'m [u8]> {
        let skip = 4 + Self::FIELDS.get(i)?.0.len();
        self.pairs(i, i)?.get(skip..)
    }
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01,
/// for years 0..=9999 (Howard Hinnant's `civil_from_days`): a few integer
/// operations where the calendar types take a table walk per component.
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153; // March = 0
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as u32, month, day)
}

/// Compact JSON, written as serde_json writes async-graphql's `Value`.
struct Json(Vec<u8>);

impl Json {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// `{`; keys then add their own commas.
    fn open(&mut self) {
        self.0.push(b'{');
    }

    fn close(&mut self) {
        self.0.push(b'}');
    }

    fn list_open(&mut self) {
        self.0.push(b'[');
    }

    fn list_close(&mut self) {
        self.0.push(b']');
    }

    /// The separator before item `i` of a list.
    fn item(&mut self, i: usize) {
        if i > 0 {
            self.0.push(b',');
        }
    }

    /// A key written as `"key":` ([`Sel::json_key`]), after a comma unless
    /// first in its object. Keys are GraphQL names (letters, digits, `_`):
    /// nothing to escape.
    fn key(&mut self, json_key: &[u8]) {
        if self.0.last() != Some(&b'{') {
            self.0.push(b',');
        }
        self.0.extend_from_slice(json_key);
    }

    /// [`Json::key`] of a GraphQL name not prebuilt as `"key":`.
    fn key_str(&mut self, name: &str) {
        if self.0.last() != Some(&b'{') {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    /// A JSON string, escaped as serde_json escapes it.
    fn string(&mut self, s: &str) {
        if !crate::escape::needs_escape(s.as_bytes()) {
            self.0.reserve(s.len() + 2);
            self.0.push(b'"');
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(b'"');
        } else {
            // Writing to a Vec cannot fail, and a &str always serializes.
            let _ = serde_json::to_writer(&mut self.0, s);
        }
    }

    /// An instant as async-graphql's `DateTime` writes it (chrono's
    /// `to_rfc3339`: `+00:00`, and a fraction of 3, 6 or 9 digits only
    /// when there is one), or null.
    fn opt_date(&mut self, date: Option<&DateTime<Utc>>) {
        let Some(date) = date else {
            return self.null();
        };
        let (secs, nanos) = (date.timestamp(), date.timestamp_subsec_nanos());
        // 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z, and no leap second.
        if !(-62_167_219_200..=253_402_300_799).contains(&secs) || nanos >= 1_000_000_000 {
            // A sign before the year, or a leap second: chrono's own way.
            return self.string(&date.to_rfc3339());
        }
        let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let (year, month, day) = civil_from_days(days);
        // Written into a buffer on the stack, then copied once.
        let mut text = *b"\"0000-00-00T00:00:00.000000000+00:00\"";
        let two = |text: &mut [u8; 37], at: usize, n: u32| {
            text[at] = b'0' + (n / 10 % 10) as u8;
            text[at + 1] = b'0' + (n % 10) as u8;
        };
        two(&mut text, 1, year / 100);
        two(&mut text, 3, year % 100);
        two(&mut text, 6, month);
        two(&mut text, 9, day);
        two(&mut text, 12, second_of_day / 3600);
        two(&mut text, 15, second_of_day / 60 % 60);
        two(&mut text, 18, second_of_day % 60);
        let (digits, mut fraction) = if nanos == 0 {
            (0, 0)
        } else if nanos % 1_000_000 == 0 {
            (3, nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            (6, nanos / 1_000)
        } else {
            (9, nanos)
        };
        for at in (21..21 + digits).rev() {
            text[at] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        // `"` and the date and time (20 bytes), the `.` and fraction when
        // there is one, then `+00:00"`.
        let head = if digits == 0 { 20 } else { 21 + digits };
        self.0.extend_from_slice(&text[..head]);
        self.0.extend_from_slice(b"+00:00\"");
    }

    fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }

    fn opt_enum<T: EnumType>(&mut self, value: Option<T>) {
        match value.and_then(|v| T::items().iter().find(|item| item.value == v)) {
            Some(item) => self.string(item.name),
            None => self.null(),
        }
    }

    fn number(&mut self, n: i64) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn bool(&mut self, b: bool) {
        self.0
            .extend_from_slice(if b { b"true" as &[u8] } else { b"false" });
    }

    fn null(&mut self) {
        self.0.extend_from_slice(b"null");
    }
}

#[cfg(test)]
// A failed unwrap is a failed test; the lint is meant for library code.
#[allow(clippy::unwrap_used)]
mod tests {
    use async_graphql::InputType as _;
    use chrono::TimeZone as _;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::model::{AccountId, Region, Session, SessionId};

    fn written(write: impl FnOnce(&mut Json)) -> String {
        let mut out = Json::with_capacity(16);
        write(&mut out);
        String::from_utf8(out.0).unwrap()
    }

    /// What async-graphql's response serializer writes for `value`.
    fn serialized(value: async_graphql::Value) -> String {
        serde_json::to_string(&value).unwrap()
    }

    #[test]
    fn enums_are_written_by_their_graphql_names() {
        for item in SessionStatus::items() {
            assert_eq!(
                written(|o| o.opt_enum(Some(item.value))),
                serialized(item.value.to_value())
            );
        }
        for item in AccessType::items() {
            assert_eq!(
                written(|o| o.opt_enum(Some(item.value))),
                serialized(item.value.to_value())
            );
        }
        assert_eq!(written(|o| o.opt_enum::<AccessType>(None)), "null");
    }

    #[test]
    fn node_ids_are_the_schemas() {
        let (account, region) = (
            AccountId::parse("123456789012").unwrap(),
            Region::parse("ap-southeast-2").unwrap(),
        );
        for id in ["s-1", &"x".repeat(96)] {
            let session = SessionId::parse(id).unwrap();
            let mut out = Vec::new();
            node_id::encode_into(&account, &region, &session, &mut out);
            let text = format!("Session:{account}:{region}:{session}");
            use base64::Engine as _;
            let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
            assert_eq!(node_id::encode(&account, &region, &session), expected);
        }
    }

    proptest! {
        #[test]
        fn owner_names_are_the_arns_last_segment(
            owner in "([a-z:/]{0,3}(arn|aws|iam|sts|:|/|[0-9]{3}|user|role|x)){0,12}",
        ) {
            // The definition, plainly: after the fifth `:`, after the last `/`.
            let plain = owner
                .splitn(6, ':')
                .nth(5)
                .and_then(|resource| resource.rsplit('/').next())
                .filter(|s| !s.is_empty());
            prop_assert_eq!(super::super::types::owner_name(Some(&owner)), plain);
        }

        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(s in any::<String>()) {
            prop_assert_eq!(written(|o| o.string(&s)), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn dates_are_written_as_async_graphql_writes_them(
            secs in -62_167_219_200i64..=253_402_300_799,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            let date = Utc.timestamp_opt(secs, nanos).unwrap();
            prop_assert_eq!(
                written(|o| o.opt_date(Some(&date))),
                serialized(date.to_value())
            );
        }
    }

    #[test]
    fn calendar_edges_are_written_as_async_graphql_writes_them() {
        for (secs, nanos) in [
            (-62_167_219_200, 0),           // 0000-01-01T00:00:00
            (253_402_300_799, 999_999_999), // 9999-12-31T23:59:59.999999999
            (0, 0),                         // 1970-01-01
            (-1, 500_000_000),              // 1969-12-31T23:59:59.5
            (951_782_400, 0),               // 2000-02-29
            (-2_203_891_200, 0),            // 1900-03-01
            (4_107_542_399, 1_000),         // 2100-02-28T23:59:59.000001
        ] {
            let date = Utc.timestamp_opt(secs, nanos).unwrap();
            assert_eq!(
                written(|o| o.opt_date(Some(&date))),
                serialized(date.to_value()),
                "{date:?}"
            );
        }
    }

    #[test]
    fn dates_beyond_four_digit_years_and_leap_seconds_are_chronos() {
        let far = Utc.with_ymd_and_hms(12345, 1, 2, 3, 4, 5).unwrap();
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        for date in [far, leap] {
            assert_eq!(
                written(|o| o.opt_date(Some(&date))),
                serialized(date.to_value())
            );
        }
        assert_eq!(written(|o| o.opt_date(None)), "null");
    }

    /// The memo's tables agree: each field's place, its name, and the name
    /// the collector maps to it.
    #[test]
    fn the_memos_fields_names_and_places_agree() {
        for (i, (_, field)) in Memo::FIELDS.iter().enumerate() {
            assert_eq!(field.memo_index(), Some(i));
        }
        let document = async_graphql::parser::parse_query(format!(
            "{{ sessions(state: HISTORY, first: 1) {{ nodes {{ {} }} }} }}",
            Memo::FIELDS.map(|(name, _)| name).join(" ")
        ))
        .unwrap();
        let (_, operation) = document.operations.iter().next().unwrap();
        let variables = Variables::default();
        let plan = Plan::new(&document, &operation.node, &variables)
            .expect("the compiled path takes every memo field");
        let Root::Sessions(sessions) = &plan.roots[0].kind else {
            panic!("not a sessions root");
        };
        let Conn::Nodes(node) = &sessions.selection[0].kind else {
            panic!("not nodes");
        };
        let places: Vec<_> = node.fields.iter().map(|f| f.kind.memo_index()).collect();
        assert_eq!(
            places,
            (0..Memo::FIELDS.len()).map(Some).collect::<Vec<_>>()
        );
        // Named as the memo names them, in its order: one stretch of pairs.
        assert!(matches!(
            node.memo.as_deref(),
            Some([Segment::Pairs { first: 0, last: 14 }])
        ));
    }

    fn located(session: Session) -> Located {
        let account = Arc::new(crate::accounts::Account {
            id: AccountId::parse("123456789012").unwrap(),
            alias: "prod".into(),
            regions: vec![Region::parse("eu-west-1").unwrap()],
        });
        let page = crate::upstream::Page::new(
            vec![Session::new(SessionId::parse("s-0").unwrap()), session],
            None,
        );
        Located {
            session: crate::upstream::SessionRef::new(Arc::new(page), 1).unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
            account,
        }
    }

    /// A plan holds for the values its `@skip`/`@include` variables had
    /// when it was collected, whatever the other variables.
    #[test]
    fn a_plan_holds_while_its_conditions_read_the_same() {
        let document = async_graphql::parser::parse_query(
            "query($a: Boolean!, $b: Boolean = false, $first: Int) { \
             sessions(state: HISTORY, first: $first) { nodes { sessionId @include(if: $a) \
             region @skip(if: $b) target @skip(if: false) } } }",
        )
        .unwrap();
        let (_, operation) = document.operations.iter().next().unwrap();
        let operation = &operation.node;
        let variables = |json: serde_json::Value| Variables::from_json(json);
        let plan = Plan::new(&document, operation, &variables(json!({ "a": true }))).unwrap();
        let names: Vec<_> = plan
            .conditions
            .iter()
            .map(|(n, v)| (n.as_str(), *v))
            .collect();
        assert_eq!(names, [("a", true), ("b", false)]);
        for (given, holds) in [
            (json!({ "a": true, "first": 3 }), true),
            (json!({ "a": true, "b": false }), true),
            (json!({ "a": false }), false),
            (json!({ "a": true, "b": true }), false),
            (json!({ "b": false }), false),
            (json!({ "a": "yes" }), false),
        ] {
            assert_eq!(
                plan.holds(operation, &variables(given.clone())),
                holds,
                "{given}"
            );
        }
        // Prepared with other arguments: coerced per request, checked
        // against the complexity bound.
        let plan = Arc::new(plan);
        let prepared = Arc::clone(&plan)
            .prepare(
                operation,
                &variables(json!({ "a": true, "first": 7 })),
                10_000,
            )
            .unwrap();
        assert_eq!(prepared.args[0].as_ref().map(|a| a.first), Some(Some(7)));
        assert!(
            Arc::clone(&plan)
                .prepare(
                    operation,
                    &variables(json!({ "a": true, "first": "x" })),
                    10_000
                )
                .is_none()
        );
        assert!(
            plan.prepare(operation, &variables(json!({ "a": true, "first": 7 })), 10)
                .is_none()
        );
    }

    fn any_session() -> impl Strategy<Value = Session> {
        let text = || proptest::option::of("[a-z0-9 \"\\\\/\n\u{1}é-]{0,24}");
        let date = || {
            proptest::option::of((0i64..4_102_444_800, 0u32..3).prop_map(|(s, n)| {
                Utc.timestamp_opt(s, [0, 5_000_000, 123_456_789][n as usize])
                    .unwrap()
            }))
        };
        (
            "[a-z0-9-]{1,30}",
            (text(), text(), text(), text(), text()),
            (date(), date()),
            proptest::option::of(0usize..6),
            proptest::option::of(1u32..1441),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(
                |(
                    id,
                    (target, document, owner, reason, details),
                    (start, end),
                    status,
                    max,
                    jit,
                )| Session {
                    target,
                    document_name: document,
                    owner: owner.map(|o| format!("arn:aws:iam::123456789012:user/{o}")),
                    reason,
                    details,
                    start_date: start,
                    end_date: end,
                    status: status.map(|i| crate::model::SessionStatus::ALL[i]),
                    max_session_duration_minutes: max,
                    access_type: jit.map(|j| {
                        if j {
                            crate::model::AccessType::JustInTime
                        } else {
                            crate::model::AccessType::Standard
                        }
                    }),
                    ..Session::new(SessionId::parse(id).unwrap())
                },
            )
    }

    proptest! {
        /// A session written from its memo, for any selection of fields in
        /// any order, aliased or not, reads as the session written field by
        /// field, the first time (which fills the memo) and after.
        #[test]
        fn sessions_read_the_same_from_their_memo(
            session in any_session(),
            picks in proptest::collection::vec((0usize..19, any::<bool>()), 0..24),
        ) {
            let located = located(session);
            let names = [
                "__typename", "id", "region", "sessionId", "target", "status", "startDate",
                "endDate", "documentName", "owner", "reason", "details", "maxSessionDuration",
                "accessType", "durationSeconds", "ownerName", "account", "outputUrl", "id",
            ];
            let mut seen = std::collections::HashSet::new();
            let selection: Vec<String> = picks
                .iter()
                .filter_map(|&(i, alias)| {
                    let name = names[i];
                    let sub = match name {
                        "account" => " { id alias }",
                        "outputUrl" => " { s3OutputUrl }",
                        _ => "",
                    };
                    let key = if alias { format!("a{i}") } else { name.to_owned() };
                    seen.insert(key.clone()).then(|| format!("{key}: {name}{sub}"))
                })
                .collect();
            let query = format!("{{ sessions(state: HISTORY, first: 1) {{ nodes {{ __typename {} }} }} }}", selection.join(" "));
            let document = async_graphql::parser::parse_query(&query).unwrap();
            let (_, operation) = document.operations.iter().next().unwrap();
            let variables = Variables::default();
            let plan = Plan::new(&document, &operation.node, &variables).unwrap();
            let Root::Sessions(sessions) = &plan.roots[0].kind else { panic!() };
            let Conn::Nodes(node) = &sessions.selection[0].kind else { panic!() };
            let direct = Node { fields: node.fields.clone(), memo: None };
            let plain = written(|o| write_session(&located, &direct, o));
            prop_assert_eq!(&written(|o| write_session(&located, node, o)), &plain, "{}", query);
            prop_assert_eq!(&written(|o| write_session(&located, node, o)), &plain, "{}", query);
            // The answer is JSON.
            serde_json::from_str::<serde_json::Value>(&plain).unwrap();
        }
    }
}
