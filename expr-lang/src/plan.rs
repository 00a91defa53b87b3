//! Evaluating each distinct expression once per bag.
//!
//! Configurations repeat expressions: Istio's four HTTP metrics share twenty dimension
//! expressions, and rules share `match` predicates. When a configuration is compiled, a
//! [`PlanBuilder`] gives every distinct expression (same text, same type) an [`ExprId`];
//! at request time an [`EvalTable`] remembers each expression's result for the bag being
//! processed, so the instances that share it evaluate it once.
//!
//! Equal text and type compile to equal programs against one manifest and function table,
//! and the standard functions are pure, so any of the identical programs may stand for the
//! others. The table never records referenced attributes: it serves the Report path, which
//! does not record them.

use std::collections::HashMap;

use crate::bag::Bag;
use crate::error::EvalError;
use crate::program::Program;
use crate::referenced::{NoRecording, Recorder};
use crate::value::{Value, ValueType};

/// The plan's name for one distinct expression: an index into an [`EvalTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExprId(u32);

impl ExprId {
    /// An expression outside any plan: evaluated every time it is used.
    pub const NONE: ExprId = ExprId(u32::MAX);

    fn index(self) -> usize {
        self.0 as usize
    }
}

impl Default for ExprId {
    fn default() -> Self {
        ExprId::NONE
    }
}

/// Collects the distinct expressions of one configuration snapshot.
#[derive(Debug, Default)]
pub struct PlanBuilder {
    ids: HashMap<(String, ValueType), ExprId>,
}

impl PlanBuilder {
    pub fn new() -> PlanBuilder {
        PlanBuilder::default()
    }

    /// The id of `program`'s expression, shared by every program with the same source
    /// text and type.
    pub fn intern(&mut self, program: &Program) -> ExprId {
        let next = ExprId(u32::try_from(self.ids.len()).unwrap_or(u32::MAX));
        if next == ExprId::NONE {
            return ExprId::NONE;
        }
        *self
            .ids
            .entry((program.source().to_owned(), program.result_type()))
            .or_insert(next)
    }

    pub fn finish(self) -> EvalPlan {
        EvalPlan {
            len: self.ids.len(),
        }
    }
}

/// The distinct expressions of a snapshot: how many slots an [`EvalTable`] needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvalPlan {
    len: usize,
}

impl EvalPlan {
    /// The number of distinct expressions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One expression's result for the bag of generation `generation`.
struct Slot<'a> {
    generation: u32,
    result: Result<Value<'a>, Box<EvalError>>,
}

/// Results of a plan's expressions for one bag at a time. Reused across the bags of a
/// batch: starting a bag bumps a generation instead of clearing every slot.
pub struct EvalTable<'a> {
    generation: u32,
    slots: Vec<Slot<'a>>,
    evaluations: u64,
}

impl<'a> EvalTable<'a> {
    pub fn new(plan: &EvalPlan) -> EvalTable<'a> {
        let mut slots = Vec::with_capacity(plan.len);
        slots.resize_with(plan.len, || Slot {
            generation: 0,
            result: Ok(Value::Bool(false)),
        });
        EvalTable {
            generation: 0,
            slots,
            evaluations: 0,
        }
    }

    /// Starts `bag`: every slot is empty until its expression is first evaluated.
    pub fn for_bag<'t, B: Bag + ?Sized>(&'t mut self, bag: &'a B) -> BagEval<'t, 'a, B> {
        if self.generation == u32::MAX {
            for s in &mut self.slots {
                s.generation = 0;
            }
            self.generation = 0;
        }
        self.generation += 1;
        BagEval { table: self, bag }
    }

    /// How many programs the table evaluated (results served from a slot excluded).
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }
}

/// Evaluates a field's or a predicate's program for one bag. Errors are boxed so that
/// results stay small on the hot path.
pub trait Evaluator<'a> {
    /// The value of `program`, whose plan id is `id`.
    fn evaluate(&mut self, id: ExprId, program: &'a Program) -> Result<Value<'a>, Box<EvalError>>;
}

/// Evaluates every program each time, recording lookups: the Check path, and builders
/// used outside a plan.
pub struct Direct<'a, 'r, B: ?Sized, R> {
    bag: &'a B,
    rec: &'r mut R,
}

impl<'a, 'r, B: Bag + ?Sized, R: Recorder> Direct<'a, 'r, B, R> {
    pub fn new(bag: &'a B, rec: &'r mut R) -> Self {
        Direct { bag, rec }
    }
}

impl<'a, B: Bag + ?Sized, R: Recorder> Evaluator<'a> for Direct<'a, '_, B, R> {
    #[inline]
    fn evaluate(&mut self, _: ExprId, program: &'a Program) -> Result<Value<'a>, Box<EvalError>> {
        program.evaluate_boxed(self.bag, &mut *self.rec)
    }
}

/// An [`EvalTable`] serving one bag.
pub struct BagEval<'t, 'a, B: ?Sized> {
    table: &'t mut EvalTable<'a>,
    bag: &'a B,
}

impl<'a, B: Bag + ?Sized> BagEval<'_, 'a, B> {
    /// The bag being served.
    pub fn bag(&self) -> &'a B {
        self.bag
    }

    /// This bag's result for `id`, when already evaluated.
    #[inline]
    fn cached(&self, id: ExprId) -> Option<&Result<Value<'a>, Box<EvalError>>> {
        self.table
            .slots
            .get(id.index())
            .filter(|s| s.generation == self.table.generation)
            .map(|s| &s.result)
    }

    /// Keeps a fresh `result` in `id`'s slot (when the table has one); out of line, so
    /// that the hit path stays small where it is inlined.
    #[inline(never)]
    fn fill(
        &mut self,
        id: ExprId,
        result: Result<Value<'a>, Box<EvalError>>,
    ) -> Result<Value<'a>, Box<EvalError>> {
        let generation = self.table.generation;
        let Some(slot) = self.table.slots.get_mut(id.index()) else {
            return result;
        };
        let out = share(&result);
        slot.result = result;
        slot.generation = generation;
        self.table.evaluations += 1;
        out
    }

    /// A BOOL program's value (a rule's `match`).
    pub fn evaluate_bool(&mut self, id: ExprId, program: &'a Program) -> Result<bool, EvalError> {
        let result = match self.cached(id) {
            Some(r) => share(r),
            None => {
                let r = program
                    .evaluate_bool_recorded(self.bag, &mut NoRecording)
                    .map(Value::Bool)
                    .map_err(Box::new);
                self.fill(id, r)
            }
        };
        match result {
            Ok(Value::Bool(b)) => Ok(b),
            Err(e) => Err(*e),
            // Never, for a BOOL program.
            Ok(_) => program.evaluate_bool(self.bag),
        }
    }
}

impl<'a, B: Bag + ?Sized> Evaluator<'a> for BagEval<'_, 'a, B> {
    #[inline]
    fn evaluate(&mut self, id: ExprId, program: &'a Program) -> Result<Value<'a>, Box<EvalError>> {
        match self.cached(id) {
            Some(r) => share(r),
            None => {
                let r = program.evaluate_boxed(self.bag, NoRecording);
                self.fill(id, r)
            }
        }
    }
}

/// A copy of a kept result for one more user.
#[inline]
fn share<'a>(r: &Result<Value<'a>, Box<EvalError>>) -> Result<Value<'a>, Box<EvalError>> {
    match r {
        Ok(v) => Ok(v.share()),
        Err(e) => Err(e.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::bag::{AttrKey, MapBag};
    use crate::manifest::Manifest;

    /// Counts the lookups of the bag it wraps.
    struct Counting {
        bag: MapBag,
        lookups: Cell<usize>,
    }

    impl Bag for Counting {
        fn get(&self, key: AttrKey<'_>) -> Option<Value<'_>> {
            self.lookups.set(self.lookups.get() + 1);
            self.bag.get(key)
        }
    }

    fn manifest() -> Manifest {
        Manifest::from_pairs([("a", ValueType::String), ("n", ValueType::Int64)])
    }

    fn counting(bag: MapBag) -> Counting {
        Counting {
            bag,
            lookups: Cell::new(0),
        }
    }

    #[test]
    fn equal_text_and_type_share_an_id() {
        let m = manifest();
        let mut plan = PlanBuilder::new();
        let a1 = plan.intern(&Program::compile(r#"a | "x""#, &m).unwrap());
        let a2 = plan.intern(&Program::compile(r#"a | "x""#, &m).unwrap());
        let b = plan.intern(&Program::compile(r#"a | "y""#, &m).unwrap());
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_eq!(plan.finish().len(), 2);
    }

    #[test]
    fn a_shared_expression_is_evaluated_once_per_bag() {
        let m = manifest();
        let mut plan = PlanBuilder::new();
        let first = Program::compile(r#"a | "x""#, &m).unwrap();
        let second = Program::compile(r#"a | "x""#, &m).unwrap();
        let (i1, i2) = (plan.intern(&first), plan.intern(&second));
        let plan = plan.finish();
        let bags = [
            counting(MapBag::new().with("a", Value::str("one"))),
            counting(MapBag::new()),
        ];
        let mut table = EvalTable::new(&plan);
        for (bag, want) in bags.iter().zip(["one", "x"]) {
            let mut eval = table.for_bag(bag);
            for _ in 0..3 {
                assert_eq!(eval.evaluate(i1, &first).unwrap(), Value::str(want));
                assert_eq!(eval.evaluate(i2, &second).unwrap(), Value::str(want));
            }
            assert_eq!(bag.lookups.get(), 1);
        }
        assert_eq!(table.evaluations(), 2);
    }

    #[test]
    fn errors_are_remembered_and_repeated() {
        let m = manifest();
        let mut plan = PlanBuilder::new();
        let p = Program::compile("n == 1", &m).unwrap();
        let id = plan.intern(&p);
        let mut table = EvalTable::new(&plan.finish());
        let bag = counting(MapBag::new());
        let mut eval = table.for_bag(&bag);
        let want = EvalError::LookupFailed("n".to_owned());
        assert_eq!(eval.evaluate_bool(id, &p), Err(want.clone()));
        assert_eq!(eval.evaluate_bool(id, &p), Err(want.clone()));
        assert_eq!(eval.evaluate(id, &p), Err(Box::new(want)));
        assert_eq!(bag.lookups.get(), 1);
        let present = counting(MapBag::new().with("n", Value::Int64(1)));
        assert_eq!(table.for_bag(&present).evaluate_bool(id, &p), Ok(true));
    }

    #[test]
    fn ids_outside_the_table_evaluate_directly() {
        let m = manifest();
        let p = Program::compile(r#"a | "x""#, &m).unwrap();
        let mut table = EvalTable::new(&EvalPlan::default());
        let bag = counting(MapBag::new());
        let mut eval = table.for_bag(&bag);
        assert_eq!(eval.evaluate(ExprId::NONE, &p).unwrap(), Value::str("x"));
        assert_eq!(eval.evaluate(ExprId::NONE, &p).unwrap(), Value::str("x"));
        assert_eq!(bag.lookups.get(), 2);
    }
}
