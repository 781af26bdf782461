//! Hostile components that a Rust guest cannot be: a core module written
//! instruction by instruction with `wasm-encoder`, exporting the
//! `leat:processor/guest@0.1.3` functions of the `runnable` world (each
//! answers "ok" from a zeroed return area), made a component by
//! `wit-component` from the project's own WIT.

use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, MemorySection,
    MemoryType, Module, RefType, TableSection, TableType, TypeSection, ValType,
};

/// What the component does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Declares this many memories (the host allows 8).
    Memories(u32),
    /// Grows its table by this many elements in `init`, again and again.
    TableGrowth(u32),
}

/// Where the zeroed return area lies (an `ok` result is all zeros), and
/// where `cabi_realloc` hands out memory, bump by bump.
const RETURN_AREA: i32 = 16;
const HEAP_START: i32 = 1024;

/// The component's bytes.
pub fn hostile_component(misbehaviour: Misbehaviour) -> anyhow::Result<Vec<u8>> {
    let mut module = core_module(misbehaviour);
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(crate::repo_root().join("wit"))?;
    let world = resolve.select_world(&[package], Some("runnable"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    wit_component::ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
}

fn core_module(misbehaviour: Misbehaviour) -> Vec<u8> {
    let mut types = TypeSection::new();
    // 0: (ptr, len) -> result pointer: init, process.
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I32]);
    // 1: (ptr, len) -> (): on-assigned, on-revoked.
    types.ty().function([ValType::I32, ValType::I32], []);
    // 2: cabi_realloc(old, old_size, align, new_size) -> ptr.
    types.ty().function([ValType::I32; 4], [ValType::I32]);

    let mut functions = FunctionSection::new();
    for ty in [0, 0, 1, 1, 2] {
        functions.function(ty);
    }

    let memories_count = match misbehaviour {
        Misbehaviour::Memories(n) => n.max(1),
        Misbehaviour::TableGrowth(_) => 1,
    };
    let mut memories = MemorySection::new();
    for _ in 0..memories_count {
        memories.memory(MemoryType {
            minimum: 2,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: RefType::FUNCREF,
        minimum: 1,
        maximum: None,
        table64: false,
        shared: false,
    });

    let mut exports = ExportSection::new();
    exports.export("leat:processor/guest@0.1.3#init", ExportKind::Func, 0);
    exports.export("leat:processor/guest@0.1.3#process", ExportKind::Func, 1);
    exports.export(
        "leat:processor/guest@0.1.3#on-assigned",
        ExportKind::Func,
        2,
    );
    exports.export("leat:processor/guest@0.1.3#on-revoked", ExportKind::Func, 3);
    exports.export("cabi_realloc", ExportKind::Func, 4);
    exports.export("memory", ExportKind::Memory, 0);

    let mut code = CodeSection::new();
    // init: grows the table without end when asked to, then answers ok.
    let mut init = Function::new([]);
    if let Misbehaviour::TableGrowth(delta) = misbehaviour {
        init.instruction(&Instruction::Loop(wasm_encoder::BlockType::Empty));
        init.instruction(&Instruction::RefNull(wasm_encoder::HeapType::FUNC));
        init.instruction(&Instruction::I32Const(delta as i32));
        init.instruction(&Instruction::TableGrow(0));
        init.instruction(&Instruction::Drop);
        init.instruction(&Instruction::Br(0));
        init.instruction(&Instruction::End);
    }
    init.instruction(&Instruction::I32Const(RETURN_AREA));
    init.instruction(&Instruction::End);
    code.function(&init);
    // process: ok.
    let mut process = Function::new([]);
    process.instruction(&Instruction::I32Const(RETURN_AREA));
    process.instruction(&Instruction::End);
    code.function(&process);
    // on-assigned, on-revoked: nothing.
    for _ in 0..2 {
        let mut f = Function::new([]);
        f.instruction(&Instruction::End);
        code.function(&f);
    }
    // cabi_realloc: a bump allocator from HEAP_START (the bump pointer is
    // kept at address 0), growing the memory as needed.
    let mut realloc = Function::new([(1, ValType::I32)]);
    // local 4 = max(load(0), HEAP_START)
    realloc.instruction(&Instruction::I32Const(0));
    realloc.instruction(&Instruction::I32Load(wasm_encoder::MemArg {
        offset: 0,
        align: 2,
        memory_index: 0,
    }));
    realloc.instruction(&Instruction::LocalTee(4));
    realloc.instruction(&Instruction::I32Const(HEAP_START));
    realloc.instruction(&Instruction::LocalGet(4));
    realloc.instruction(&Instruction::I32Const(HEAP_START));
    realloc.instruction(&Instruction::I32GtU);
    realloc.instruction(&Instruction::Select);
    // align to 8
    realloc.instruction(&Instruction::I32Const(7));
    realloc.instruction(&Instruction::I32Add);
    realloc.instruction(&Instruction::I32Const(-8));
    realloc.instruction(&Instruction::I32And);
    realloc.instruction(&Instruction::LocalSet(4));
    // store(0, local4 + new_size)
    realloc.instruction(&Instruction::I32Const(0));
    realloc.instruction(&Instruction::LocalGet(4));
    realloc.instruction(&Instruction::LocalGet(3));
    realloc.instruction(&Instruction::I32Add);
    realloc.instruction(&Instruction::I32Store(wasm_encoder::MemArg {
        offset: 0,
        align: 2,
        memory_index: 0,
    }));
    // grow by (new_size >> 16) + 1 pages: enough for this allocation
    realloc.instruction(&Instruction::LocalGet(3));
    realloc.instruction(&Instruction::I32Const(16));
    realloc.instruction(&Instruction::I32ShrU);
    realloc.instruction(&Instruction::I32Const(1));
    realloc.instruction(&Instruction::I32Add);
    realloc.instruction(&Instruction::MemoryGrow(0));
    realloc.instruction(&Instruction::Drop);
    realloc.instruction(&Instruction::LocalGet(4));
    realloc.instruction(&Instruction::End);
    code.function(&realloc);

    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&tables)
        .section(&memories)
        .section(&exports)
        .section(&code);
    module.finish()
}
