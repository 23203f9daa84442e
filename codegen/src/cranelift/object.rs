//! Ahead-of-time compilation: a whole kernel [`Program`] into one relocatable object file
//! (ELF for the host) that links with `cc driver.c model.o -lm`.
//!
//! The object holds every kernel as a local function (the JIT's ABI, see the module
//! documentation of [`super`]), the weights as one read-only data object (64-byte
//! aligned), and this exported C API, `<name>` being the model's name:
//!
//! ```c
//! int         <name>_run(const void* const* inputs, void* const* outputs, void* workspace);
//! size_t      <name>_workspace_size(void);
//! int         <name>_num_inputs(void);          int <name>_num_outputs(void);
//! const char* <name>_input_name(int i);         const char* <name>_output_name(int i);
//! int         <name>_input_dtype(int i);        int <name>_output_dtype(int i);
//! int         <name>_input_rank(int i);         int <name>_output_rank(int i);
//! const int64_t* <name>_input_shape(int i);     const int64_t* <name>_output_shape(int i);
//! size_t      <name>_input_bytes(int i);        size_t <name>_output_bytes(int i);
//! ```
//!
//! `run` executes the steps in order, each filling a stack array with its buffers' base
//! addresses (a caller's input or output, `workspace + offset`, `weights + offset`) and
//! calling its kernel over the whole parallel range; the first nonzero kernel code is
//! returned as is. After the last step it copies the outputs that no kernel wrote in place.
//! Dtypes are ONNX `TensorProto` codes (1 = float, 6 = int32, 7 = int64, 9 = bool); an
//! index out of range gives NULL, -1 or 0.
//!
//! The math helpers the kernels call (`atomc_expf`, ...) become the C library's functions
//! (`expf`, ...) by renaming their undefined symbols once the object is finished, so that
//! lowering names them the same way for the JIT and for objects; the Python-style float
//! remainder, which has no C counterpart, is defined in the object as a local function.

use super::{libcalls, lower};
use crate::Error;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, FuncOrDataId, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};
use ir::DType;
use ir::kernel::Kernel;
use ir::schedule::Schedule;

/// Where a buffer of a step lives during `<name>_run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferRef {
    /// The caller's input `i`: `inputs[i]`.
    Input(usize),
    /// The caller's output `i`: `outputs[i]`.
    Output(usize),
    /// `workspace + offset`.
    Workspace(usize),
    /// `weights + offset`, in the object's weight data.
    Weight(usize),
}

/// One call of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStep {
    /// The index of the kernel in the `kernels` given to [`compile_object`].
    pub kernel: usize,
    /// The kernel's buffers: its inputs in order, then its output.
    pub buffers: Vec<BufferRef>,
    /// What the kernel was prepared with and its bytes (`JitKernel::prepare`: a Winograd
    /// kernel's transformed filters), passed after the output; `None`: a null pointer
    /// (a kernel that needs prepared data then returns an error).
    pub prepared: Option<(BufferRef, usize)>,
}

/// An output that no kernel writes in place: `bytes` bytes copied from `from` into the
/// caller's output `output` after the last step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputCopy {
    pub output: usize,
    pub from: BufferRef,
    pub bytes: usize,
}

/// A graph input or output as the C API describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorDesc {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorDesc {
    /// The bytes of the tensor (`None` on overflow).
    pub fn bytes(&self) -> Option<usize> {
        self.shape.iter().try_fold(self.dtype.size(), |n, &d| n.checked_mul(d))
    }
}

/// What `<name>_run` does: kernel calls in order, then output copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub steps: Vec<ProgramStep>,
    pub copies: Vec<OutputCopy>,
    /// The bytes of the caller's workspace.
    pub workspace_bytes: usize,
    pub inputs: Vec<TensorDesc>,
    pub outputs: Vec<TensorDesc>,
}

type Result<T> = std::result::Result<T, Error>;

/// Compiles `program` over `kernels` (each with its schedule: `schedules[i]` for
/// `kernels[i]`) with the weight bytes `weights` into an object file for the host (x86-64
/// or AArch64 ELF, code for the host CPU's features) exporting the C API of this module's
/// documentation under `name` (a C identifier).
pub fn compile_object(
    name: &str,
    kernels: &[Kernel],
    schedules: &[Schedule],
    program: &Program,
    weights: &[u8],
) -> Result<Vec<u8>> {
    let bad = |msg: String| Error::InvalidInput {
        kernel: name.to_string(),
        msg,
    };
    let internal = |msg: String| Error::Internal {
        kernel: name.to_string(),
        msg,
    };
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(bad(format!("'{name}' is not a C identifier")));
    }
    if schedules.len() != kernels.len() {
        return Err(bad(format!("{} schedules for {} kernels", schedules.len(), kernels.len())));
    }
    check_program(program, kernels, weights.len()).map_err(bad)?;
    let mut flags = settings::builder();
    for (flag, value) in [("opt_level", "speed"), ("is_pic", "true")] {
        flags
            .set(flag, value)
            .map_err(|e| internal(format!("setting {flag}: {e}")))?;
    }
    let isa = cranelift_native::builder()
        .map_err(|e| Error::Unsupported {
            kernel: name.to_string(),
            msg: format!("host not supported by Cranelift: {e}"),
        })?
        .finish(settings::Flags::new(flags))
        .map_err(|e| internal(format!("building the target ISA: {e}")))?;
    let builder = ObjectBuilder::new(isa, format!("{name}.o"), default_libcall_names())
        .map_err(|e| internal(format!("object builder: {e}")))?;
    let mut module = ObjectModule::new(builder);

    define_modf(&mut module).map_err(|e| internal(format!("defining atomc_modf: {e}")))?;
    let mut funcs = Vec::with_capacity(kernels.len());
    let mut extents = Vec::with_capacity(kernels.len());
    for (i, (k, schedule)) in kernels.iter().zip(schedules).enumerate() {
        ir::kernel::verify(k).map_err(|e| Error::InvalidKernel {
            kernel: k.name.clone(),
            msg: e.to_string(),
        })?;
        let symbol = format!("{name}_k{i}");
        let def = lower::define(&mut module, k, schedule, Some(&symbol))?;
        funcs.push(def.id);
        extents.push(schedule.parallel_extent(k));
    }
    let weights_id = if weights.is_empty() {
        None
    } else {
        Some(data(&mut module, &format!("{name}_weights"), weights.to_vec(), 64).map_err(internal)?)
    };
    let mut e = Emitter {
        module: &mut module,
        name,
    };
    e.run_fn(&extents, &funcs, program, weights_id).map_err(internal)?;
    e.describe(program).map_err(internal)?;

    let renames: Vec<(FuncId, &str)> = libcalls::all()
        .iter()
        .filter_map(|h| match (module.get_name(h.name), c_name(h.name)) {
            (Some(FuncOrDataId::Func(id)), Some(c)) => Some((id, c)),
            _ => None,
        })
        .collect();
    let mut product = module.finish();
    for (id, c) in renames {
        let sym = product.function_symbol(id);
        product.object.symbol_mut(sym).name = c.as_bytes().to_vec();
    }
    product.emit().map_err(|e| internal(format!("writing the object: {e}")))
}

/// The C library function a helper maps to (`atomc_expf` -> `expf`); `None` for the
/// helpers defined in the object.
fn c_name(helper: &'static str) -> Option<&'static str> {
    match helper {
        "atomc_modf" => None,
        h => h.strip_prefix("atomc_"),
    }
}

/// Checks every index and range of `program` against the kernels and sizes (also used by
/// the LLVM backend's objects).
pub(crate) fn check_program(p: &Program, kernels: &[Kernel], weight_bytes: usize) -> std::result::Result<(), String> {
    let in_range = |r: BufferRef, bytes: usize| -> std::result::Result<(), String> {
        let fits = |off: usize, size: usize| off.checked_add(bytes).is_some_and(|end| end <= size);
        let ok = match r {
            BufferRef::Input(i) => p.inputs.get(i).and_then(TensorDesc::bytes).is_some_and(|n| n >= bytes),
            BufferRef::Output(i) => p.outputs.get(i).and_then(TensorDesc::bytes).is_some_and(|n| n >= bytes),
            BufferRef::Workspace(off) => fits(off, p.workspace_bytes),
            BufferRef::Weight(off) => fits(off, weight_bytes),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("buffer {r:?} of {bytes} bytes is out of range"))
        }
    };
    for (i, s) in p.steps.iter().enumerate() {
        let k = kernels
            .get(s.kernel)
            .ok_or_else(|| format!("step {i} calls kernel {} of {}", s.kernel, kernels.len()))?;
        if s.buffers.len() != k.inputs.len() + 1 {
            return Err(format!(
                "step {i} gives {} buffers to kernel '{}' which takes {}",
                s.buffers.len(),
                k.name,
                k.inputs.len() + 1
            ));
        }
        for (b, &r) in k.inputs.iter().chain([&k.output]).zip(&s.buffers) {
            let bytes = b
                .numel
                .checked_mul(b.dtype.size())
                .ok_or_else(|| format!("buffer '{}' is too large", b.name))?;
            in_range(r, bytes)?;
        }
        if let Some((r, bytes)) = s.prepared {
            in_range(r, bytes)?;
        }
    }
    for c in &p.copies {
        in_range(c.from, c.bytes)?;
        in_range(BufferRef::Output(c.output), c.bytes)?;
    }
    Ok(())
}

/// Declares and defines a local read-only data object.
fn data(module: &mut ObjectModule, symbol: &str, bytes: Vec<u8>, align: u64) -> std::result::Result<DataId, String> {
    let id = module
        .declare_data(symbol, Linkage::Local, false, false)
        .map_err(|e| format!("declaring {symbol}: {e}"))?;
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(align);
    module
        .define_data(id, &d)
        .map_err(|e| format!("defining {symbol}: {e}"))?;
    Ok(id)
}

/// Defines the local `atomc_modf(a, b)`: Python's `%`, the sign of the divisor:
/// `r = fmodf(a, b); r != 0 && (r < 0) != (b < 0) ? r + b : r`.
fn define_modf(module: &mut ObjectModule) -> std::result::Result<(), String> {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::F32));
    sig.params.push(AbiParam::new(types::F32));
    sig.returns.push(AbiParam::new(types::F32));
    let id = module
        .declare_function("atomc_modf", Linkage::Local, &sig)
        .map_err(|e| e.to_string())?;
    let fmod = module
        .declare_function("atomc_fmodf", Linkage::Import, &sig)
        .map_err(|e| e.to_string())?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let fmod = module.declare_func_in_func(fmod, b.func);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let (a, d) = (p[0], p[1]);
        let call = b.ins().call(fmod, &[a, d]);
        let r = b.inst_results(call)[0];
        let zero = b.ins().f32const(0.0);
        let nonzero = b.ins().fcmp(FloatCC::NotEqual, r, zero);
        let r_neg = b.ins().fcmp(FloatCC::LessThan, r, zero);
        let d_neg = b.ins().fcmp(FloatCC::LessThan, d, zero);
        let differ = b.ins().bxor(r_neg, d_neg);
        let fix = b.ins().band(nonzero, differ);
        let sum = b.ins().fadd(r, d);
        let out = b.ins().select(fix, sum, r);
        b.ins().return_(&[out]);
        b.seal_all_blocks();
        b.finalize(module.isa().frontend_config());
    }
    module.define_function(id, &mut ctx).map_err(|e| format!("{e:?}"))?;
    module.clear_context(&mut ctx);
    Ok(())
}

/// A value a description function returns for one index.
#[derive(Clone, Copy)]
enum Entry {
    Int(i64),
    Data(DataId),
}

/// Defines the exported functions of one object.
struct Emitter<'a> {
    module: &'a mut ObjectModule,
    name: &'a str,
}

impl Emitter<'_> {
    fn ptr(&self) -> Type {
        self.module.target_config().pointer_type()
    }

    /// `int <name>_run(const void* const* inputs, void* const* outputs, void* workspace)`.
    fn run_fn(
        &mut self,
        extents: &[usize],
        funcs: &[FuncId],
        p: &Program,
        weights: Option<DataId>,
    ) -> std::result::Result<(), String> {
        let ptr = self.ptr();
        let ptr_bytes = i64::from(ptr.bytes());
        let mut sig = self.module.make_signature();
        for _ in 0..3 {
            sig.params.push(AbiParam::new(ptr));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let symbol = format!("{}_run", self.name);
        let id = self
            .module
            .declare_function(&symbol, Linkage::Export, &sig)
            .map_err(|e| e.to_string())?;
        let mut ctx = self.module.make_context();
        ctx.func.signature = sig;
        let mut fctx = FunctionBuilderContext::new();
        let config = self.module.target_config();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            let fail = b.create_block();
            let code = b.append_block_param(fail, types::I32);
            b.switch_to_block(entry);
            let params = b.block_params(entry).to_vec();
            let (inputs, outputs, workspace) = (params[0], params[1], params[2]);
            let weights_base = weights.map(|w| {
                let gv = self.module.declare_data_in_func(w, b.func);
                b.ins().symbol_value(ptr, gv)
            });
            // Each step's buffers, then its prepared data or null.
            let max_buffers = p.steps.iter().map(|s| s.buffers.len() + 1).max().unwrap_or(0);
            let slot_bytes = u32::try_from(max_buffers as i64 * ptr_bytes).map_err(|_| "too many buffers")?;
            let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, slot_bytes.max(8), 4));
            let refs: Vec<_> = funcs
                .iter()
                .map(|&f| self.module.declare_func_in_func(f, b.func))
                .collect();
            let addr = |b: &mut FunctionBuilder, r: BufferRef| -> std::result::Result<Value, String> {
                let off = |i: usize, scale: i64| {
                    i64::try_from(i)
                        .ok()
                        .and_then(|i| i.checked_mul(scale))
                        .ok_or_else(|| format!("offset {i} too large"))
                };
                let load = |b: &mut FunctionBuilder, base: Value, i: usize| -> std::result::Result<Value, String> {
                    let o = i32::try_from(off(i, ptr_bytes)?).map_err(|_| format!("index {i} too large"))?;
                    Ok(b.ins().load(ptr, MemFlagsData::trusted(), base, o))
                };
                match r {
                    BufferRef::Input(i) => load(b, inputs, i),
                    BufferRef::Output(i) => load(b, outputs, i),
                    BufferRef::Workspace(o) => Ok(b.ins().iadd_imm_s(workspace, off(o, 1)?)),
                    BufferRef::Weight(o) => {
                        let base = weights_base.ok_or("a step reads weights, the object has none")?;
                        Ok(b.ins().iadd_imm_s(base, off(o, 1)?))
                    }
                }
            };
            for s in &p.steps {
                for (j, &r) in s.buffers.iter().enumerate() {
                    let a = addr(&mut b, r)?;
                    let o = i32::try_from(j as i64 * ptr_bytes).map_err(|_| "too many buffers")?;
                    b.ins().stack_store(ptr, a, slot, o);
                }
                let prepared = match s.prepared {
                    Some((r, _)) => addr(&mut b, r)?,
                    None => b.ins().iconst(ptr, 0),
                };
                let o = i32::try_from(s.buffers.len() as i64 * ptr_bytes).map_err(|_| "too many buffers")?;
                b.ins().stack_store(ptr, prepared, slot, o);
                let extent = extents.get(s.kernel).copied().ok_or("a step names no kernel")?;
                let extent = i64::try_from(extent).map_err(|_| "extent too large")?;
                let bufs = b.ins().stack_addr(ptr, slot, 0);
                let begin = b.ins().iconst(types::I64, 0);
                let end = b.ins().iconst(types::I64, extent);
                let call = b.ins().call(refs[s.kernel], &[bufs, begin, end]);
                let rc = b.inst_results(call)[0];
                let next = b.create_block();
                b.ins().brif(rc, fail, &[rc.into()], next, &[]);
                b.switch_to_block(next);
            }
            for c in &p.copies {
                if c.bytes == 0 {
                    continue;
                }
                let dst = addr(&mut b, BufferRef::Output(c.output))?;
                let src = addr(&mut b, c.from)?;
                let n = b.ins().iconst(ptr, i64::try_from(c.bytes).map_err(|_| "copy too large")?);
                b.call_memcpy(config, dst, src, n);
            }
            let zero = b.ins().iconst(types::I32, 0);
            b.ins().return_(&[zero]);
            b.switch_to_block(fail);
            b.ins().return_(&[code]);
            b.seal_all_blocks();
            b.finalize(config);
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("compiling {symbol}: {e:?}"))?;
        self.module.clear_context(&mut ctx);
        Ok(())
    }

    /// The size and description functions.
    fn describe(&mut self, p: &Program) -> std::result::Result<(), String> {
        let ptr = self.ptr();
        let ws = i64::try_from(p.workspace_bytes).map_err(|_| "workspace too large")?;
        self.constant("workspace_size", ptr, ws)?;
        self.constant("num_inputs", types::I32, p.inputs.len() as i64)?;
        self.constant("num_outputs", types::I32, p.outputs.len() as i64)?;
        for (kind, list) in [("input", &p.inputs), ("output", &p.outputs)] {
            let mut names = Vec::new();
            let mut shapes = Vec::new();
            for (i, t) in list.iter().enumerate() {
                let mut s = t.name.as_bytes().to_vec();
                s.push(0);
                names.push(Entry::Data(data(self.module, &format!("{}_{kind}_name_{i}", self.name), s, 1)?));
                let mut dims: Vec<u8> = t.shape.iter().flat_map(|&d| (d as i64).to_ne_bytes()).collect();
                if dims.is_empty() {
                    dims.resize(8, 0);
                }
                shapes.push(Entry::Data(data(self.module, &format!("{}_{kind}_shape_{i}", self.name), dims, 8)?));
            }
            let dtypes: Vec<Entry> = list.iter().map(|t| Entry::Int(i64::from(t.dtype.onnx_code()))).collect();
            let ranks: Vec<Entry> = list.iter().map(|t| Entry::Int(t.shape.len() as i64)).collect();
            let bytes = list
                .iter()
                .map(|t| {
                    t.bytes()
                        .and_then(|n| i64::try_from(n).ok())
                        .map(Entry::Int)
                        .ok_or_else(|| format!("{kind} '{}' is too large", t.name))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            self.table(&format!("{kind}_name"), ptr, &names, Entry::Int(0))?;
            self.table(&format!("{kind}_shape"), ptr, &shapes, Entry::Int(0))?;
            self.table(&format!("{kind}_dtype"), types::I32, &dtypes, Entry::Int(-1))?;
            self.table(&format!("{kind}_rank"), types::I32, &ranks, Entry::Int(-1))?;
            self.table(&format!("{kind}_bytes"), ptr, &bytes, Entry::Int(0))?;
        }
        Ok(())
    }

    /// `T <name>_<what>(void)` returning `value`.
    fn constant(&mut self, what: &str, ty: Type, value: i64) -> std::result::Result<(), String> {
        self.function(what, None, ty, |_, b, _| Ok(b.ins().iconst(ty, value)))
    }

    /// `T <name>_<what>(int i)` returning `entries[i]`, or `default` out of range.
    fn table(&mut self, what: &str, ty: Type, entries: &[Entry], default: Entry) -> std::result::Result<(), String> {
        self.function(what, Some(types::I32), ty, |module, b, arg| {
            let value = |b: &mut FunctionBuilder, e: Entry| match e {
                Entry::Int(n) => b.ins().iconst(ty, n),
                Entry::Data(d) => {
                    let gv = module.declare_data_in_func(d, b.func);
                    b.ins().symbol_value(ty, gv)
                }
            };
            let idx = arg.ok_or("no index parameter")?;
            let mut out = value(b, default);
            for (i, &e) in entries.iter().enumerate() {
                let v = value(b, e);
                let hit = b.ins().icmp_imm_s(IntCC::Equal, idx, i as i64);
                out = b.ins().select(hit, v, out);
            }
            Ok(out)
        })
    }

    /// Defines the exported `ret <name>_<what>([param])` whose body `body` builds.
    fn function(
        &mut self,
        what: &str,
        param: Option<Type>,
        ret: Type,
        body: impl FnOnce(&mut ObjectModule, &mut FunctionBuilder, Option<Value>) -> std::result::Result<Value, String>,
    ) -> std::result::Result<(), String> {
        let mut sig = self.module.make_signature();
        sig.params.extend(param.map(AbiParam::new));
        sig.returns.push(AbiParam::new(ret));
        let symbol = format!("{}_{what}", self.name);
        let id = self
            .module
            .declare_function(&symbol, Linkage::Export, &sig)
            .map_err(|e| e.to_string())?;
        let mut ctx = self.module.make_context();
        ctx.func.signature = sig;
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let arg = b.block_params(entry).first().copied();
            let v = body(self.module, &mut b, arg)?;
            b.ins().return_(&[v]);
            b.seal_all_blocks();
            b.finalize(self.module.isa().frontend_config());
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| format!("compiling {symbol}: {e:?}"))?;
        self.module.clear_context(&mut ctx);
        Ok(())
    }
}
