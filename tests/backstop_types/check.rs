//! A CEL type check of field selections, as the API server runs it on admission policies: the
//! expression parsed by the `cel` crate (macros arrive expanded into comprehensions, `has()`
//! into a presence test), walked with the declared types of its variables. It reports what
//! cel-go's checker would for a selection: a field the object type does not have, selection on
//! a type that has no fields, and a reference to an undeclared variable. Function overloads,
//! result types and cost are not checked. Everything it cannot type is dyn, and dyn accepts
//! every selection, so it never reports what the API server would not.

use std::collections::HashMap;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, SourceInfo, operators};

use super::schema::Type;

/// The namespaces of the functions the Kubernetes CEL environment calls as `ns.f(...)` (the
/// lists, sets, math and base64 extensions, and MutatingAdmissionPolicy's `jsonpatch`).
const FUNCTION_NAMESPACES: &[&str] = &["lists", "sets", "math", "base64", "jsonpatch", "strings"];

/// One finding, where cel-go would put it: `line:column` (1-based, in characters) of the
/// selection's `.` or of a `has(`'s parenthesis.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]

pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<input>:{}:{}: {}", self.line, self.column, self.message)
    }
}

/// The declared variables of an expression.
#[derive(Clone, Default)]
pub struct Env {
    pub variables: HashMap<String, Type>,
}

/// Identifiers that name types (`type(x) == string`); values of no interest here.
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "timestamp",
    "type",
    "uint",
];

/// The expression's type and what the checker finds in it; `Err` when it does not parse.
pub fn check(expression: &str, env: &Env) -> Result<(Type, Vec<Problem>), String> {
    let (ast, info) = cel::parser::Parser::new()
        .parse_with_source_info(expression)
        .map_err(|e| format!("{e:?}"))?;
    let mut walker = Walker {
        env,
        scopes: Vec::new(),
        info: &info,
        problems: Vec::new(),
    };
    let declared = walker.expr(&ast);
    let mut problems = walker.problems;
    problems.sort();
    Ok((declared, problems))
}

struct Walker<'a> {
    env: &'a Env,
    /// Comprehension variables, innermost last.
    scopes: Vec<(String, Type)>,
    info: &'a SourceInfo,
    problems: Vec<Problem>,
}

impl Walker<'_> {
    fn report(&mut self, id: u64, message: String) {
        // The parser's offsets are in bytes; cel-go's columns in characters.
        let offset = self
            .info
            .offset_for(id)
            .map_or(0, |(start, _)| start as usize);
        let before = self.info.source.get(..offset).unwrap_or_default();
        let line = 1 + before.matches('\n').count();
        let column = 1 + before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count();
        self.problems.push(Problem {
            line,
            column,
            message,
        });
    }

    fn expr(&mut self, e: &IdedExpr) -> Type {
        match &e.expr {
            Expr::Unspecified => Type::Dyn,
            Expr::Literal(literal) => {
                use cel::common::ast::LiteralValue as L;
                match literal {
                    L::Boolean(_) => Type::Bool,
                    L::Bytes(_) => Type::Bytes,
                    L::Double(_) => Type::Double,
                    L::Int(_) | L::UInt(_) => Type::Int,
                    L::Null => Type::Null,
                    L::String(_) => Type::String,
                }
            }
            Expr::Ident(name) => self.ident(e.id, name),
            Expr::Select(select) => {
                let operand = self.expr(&select.operand);
                let field = self.select(e.id, &operand, &select.field);
                if select.test { Type::Bool } else { field }
            }
            Expr::List(list) => {
                let elements: Vec<Type> = list.elements.iter().map(|x| self.expr(x)).collect();
                Type::List(Box::new(
                    elements.into_iter().reduce(join).unwrap_or(Type::Free),
                ))
            }
            Expr::Map(map) => {
                let mut values = Vec::new();
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.expr(&m.key);
                            values.push(self.expr(&m.value));
                        }
                        EntryExpr::StructField(f) => {
                            values.push(self.expr(&f.value));
                        }
                    }
                }
                Type::Map(Box::new(
                    values.into_iter().reduce(join).unwrap_or(Type::Free),
                ))
            }
            // A struct literal (`JSONPatch{...}`, `Object{...}`): its own type is not
            // modelled, its field values are checked.
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::StructField(f) => drop(self.expr(&f.value)),
                        EntryExpr::MapEntry(m) => {
                            self.expr(&m.key);
                            self.expr(&m.value);
                        }
                    }
                }
                Type::Dyn
            }
            Expr::Call(call) => {
                // `lists.range(n)` and the like: a namespaced function of the Kubernetes CEL
                // environment, not a field of a variable called `lists`.
                let namespaced = call.target.as_deref().is_some_and(
                    |t| matches!(&t.expr, Expr::Ident(name) if FUNCTION_NAMESPACES.contains(&name.as_str())),
                );
                let target = if namespaced {
                    None
                } else {
                    call.target.as_deref().map(|t| self.expr(t))
                };
                let args: Vec<Type> = call.args.iter().map(|a| self.expr(a)).collect();
                match (call.func_name.as_str(), target, &args[..]) {
                    (operators::INDEX, None, [Type::List(elem) | Type::Map(elem), _]) => {
                        (**elem).clone()
                    }
                    (operators::CONDITIONAL, None, [_, a, b]) => join(a.clone(), b.clone()),
                    (
                        operators::LOGICAL_AND
                        | operators::LOGICAL_OR
                        | operators::LOGICAL_NOT
                        | operators::NOT_STRICTLY_FALSE
                        | operators::EQUALS
                        | operators::NOT_EQUALS
                        | operators::LESS
                        | operators::LESS_EQUALS
                        | operators::GREATER
                        | operators::GREATER_EQUALS
                        | operators::IN,
                        None,
                        _,
                    ) => Type::Bool,
                    _ => Type::Dyn,
                }
            }
            Expr::Comprehension(c) => {
                let range = self.expr(&c.iter_range);
                let (first, second) = match &range {
                    Type::List(elem) => (Type::Int, (**elem).clone()),
                    Type::Map(value) => (Type::String, (**value).clone()),
                    _ => (Type::Dyn, Type::Dyn),
                };
                let accumulator = self.expr(&c.accu_init);
                let depth = self.scopes.len();
                // One variable: a list's elements or a map's keys; two: index or key, then
                // element or value.
                match &c.iter_var2 {
                    None => {
                        let var = if matches!(range, Type::List(_)) {
                            second
                        } else {
                            first
                        };
                        self.scopes.push((c.iter_var.clone(), var));
                    }
                    Some(var2) => {
                        self.scopes.push((c.iter_var.clone(), first));
                        self.scopes.push((var2.clone(), second));
                    }
                }
                self.scopes.push((c.accu_var.clone(), accumulator));
                self.expr(&c.loop_cond);
                self.expr(&c.loop_step);
                let result = self.expr(&c.result);
                self.scopes.truncate(depth);
                result
            }
        }
    }

    fn ident(&mut self, id: u64, name: &str) -> Type {
        if let Some((_, declared)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return declared.clone();
        }
        if let Some(declared) = self.env.variables.get(name) {
            return declared.clone();
        }
        if !TYPE_NAMES.contains(&name) {
            self.report(id, format!("undeclared reference to '{name}'"));
        }
        Type::Dyn
    }

    fn select(&mut self, id: u64, operand: &Type, field: &str) -> Type {
        match operand {
            Type::Dyn | Type::Free => Type::Dyn,
            // `m.key` on a map is `m['key']`.
            Type::Map(value) => (**value).clone(),
            Type::Object(fields) => match fields.get(field) {
                Some(declared) => declared.clone(),
                None => {
                    self.report(id, format!("undefined field '{field}'"));
                    Type::Dyn
                }
            },
            other => {
                self.report(
                    id,
                    format!("type '{}' does not support field selection", other.name()),
                );
                Type::Dyn
            }
        }
    }
}

/// The type of `c ? a : b` or of a list literal's elements: the same type; an empty
/// literal's free element type gives way to the other side; anything else is dyn.
fn join(a: Type, b: Type) -> Type {
    match (a, b) {
        (a, b) if a == b => a,
        (Type::Free, other) | (other, Type::Free) => other,
        (Type::List(a), Type::List(b)) => Type::List(Box::new(join(*a, *b))),
        (Type::Map(a), Type::Map(b)) => Type::Map(Box::new(join(*a, *b))),
        _ => Type::Dyn,
    }
}
