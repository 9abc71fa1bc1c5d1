//! Loads a file, its imports and the standard library into modules; detects import cycles and
//! duplicate top-level names.

use crate::codes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tfm_diag::{Diagnostic, FileId, SourceMap, Span};
use tfm_syntax::ast;

pub(crate) type ModId = usize;

/// A model, block or variant: which module, which file of it, which item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ItemRef {
    pub module: ModId,
    pub file: usize,
    pub item: usize,
}

/// One namespace: a user file, or the standard library (several files).
pub(crate) struct Module {
    pub files: Vec<(FileId, ast::File)>,
    pub items: HashMap<String, ItemRef>,
    /// Import aliases visible in this module (`std`, `lib`).
    pub namespaces: HashMap<String, ModId>,
    pub is_std: bool,
}

#[derive(Default)]
pub(crate) struct World {
    pub modules: Vec<Module>,
    pub std: Option<ModId>,
    by_path: HashMap<PathBuf, ModId>,
    /// Files being loaded, for cycle detection: (canonical path, display name).
    stack: Vec<(PathBuf, String)>,
    pub diags: Vec<Diagnostic>,
}

impl World {
    pub fn item(&self, r: ItemRef) -> &ast::Item {
        &self.modules[r.module].files[r.file].1.items[r.item]
    }

    /// Loads the root file from text; `dir` is where its imports are found.
    pub fn load_root(&mut self, name: &str, text: &str, dir: &Path, canonical: Option<PathBuf>, sources: &mut SourceMap) -> ModId {
        let file = sources.add(name, text);
        let (ast, diags) = tfm_syntax::parse(text, file);
        self.diags.extend(diags);
        if let Some(c) = &canonical {
            self.stack.push((c.clone(), name.to_string()));
        }
        let id = self.add_module(vec![(file, ast)], false);
        if let Some(c) = canonical {
            self.by_path.insert(c, id);
        }
        self.resolve_imports(id, dir, name, sources);
        self.stack.pop();
        id
    }

    fn add_module(&mut self, files: Vec<(FileId, ast::File)>, is_std: bool) -> ModId {
        let id = self.modules.len();
        let mut items: HashMap<String, ItemRef> = HashMap::new();
        for (fi, (_, f)) in files.iter().enumerate() {
            for (ii, it) in f.items.iter().enumerate() {
                let name = it.name();
                if let Some(prev) = items.get(&name.name) {
                    let prev_span = files[prev.file].1.items[prev.item].name().span;
                    self.diags.push(
                        Diagnostic::error(codes::DUPLICATE, format!("`{}` is defined twice", name.name))
                            .at(name.span, "defined again here")
                            .with(prev_span, "first defined here")
                            .hint("rename one of them"),
                    );
                    continue;
                }
                items.insert(name.name.clone(), ItemRef { module: id, file: fi, item: ii });
            }
        }
        self.modules.push(Module { files, items, namespaces: HashMap::new(), is_std });
        id
    }

    fn load_std(&mut self, sources: &mut SourceMap) -> ModId {
        if let Some(s) = self.std {
            return s;
        }
        let mut files = vec![];
        for (name, text) in tfm_std::FILES {
            let file = sources.intern(name, text);
            let (ast, diags) = parse_std(name, text, file);
            self.diags.extend(diags);
            files.push((file, ast));
        }
        let id = self.add_module(files, true);
        self.std = Some(id);
        self.modules[id].namespaces.insert("std".into(), id);
        // Imports inside std: `import std` is itself; other imports are not supported there.
        id
    }

    fn resolve_imports(&mut self, id: ModId, dir: &Path, display: &str, sources: &mut SourceMap) {
        let imports: Vec<ast::Import> = self.modules[id].files.iter().flat_map(|(_, f)| f.imports.clone()).collect();
        let display_dir = Path::new(display).parent().map(Path::to_path_buf).unwrap_or_default();
        let mut seen: HashMap<String, Span> = HashMap::new();
        for imp in imports {
            let (ns, target) = match &imp.target {
                ast::ImportTarget::Std => {
                    let s = self.load_std(sources);
                    (imp.alias.as_ref().map(|a| a.name.clone()).unwrap_or_else(|| "std".into()), s)
                }
                ast::ImportTarget::Path(p) => {
                    let stem = Path::new(p).file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
                    let ns = imp.alias.as_ref().map(|a| a.name.clone()).unwrap_or(stem);
                    match self.load_path(p, dir, &display_dir, imp.span, sources) {
                        Some(t) => (ns, t),
                        None => continue,
                    }
                }
            };
            if let Some(prev) = seen.get(&ns) {
                self.diags.push(
                    Diagnostic::error(codes::DUPLICATE, format!("the namespace `{ns}` is imported twice"))
                        .at(imp.span, "imported again here")
                        .with(*prev, "first imported here")
                        .hint("give one of them another name with `as`"),
                );
                continue;
            }
            seen.insert(ns.clone(), imp.span);
            self.modules[id].namespaces.insert(ns, target);
        }
    }

    fn load_path(&mut self, p: &str, dir: &Path, display_dir: &Path, span: Span, sources: &mut SourceMap) -> Option<ModId> {
        let path = dir.join(p);
        let display = display_dir.join(p).to_string_lossy().replace('\\', "/");
        let canonical = match std::fs::canonicalize(&path) {
            Ok(c) => c,
            Err(e) => {
                self.diags.push(
                    Diagnostic::error(codes::IMPORT, format!("cannot read the imported file `{p}`: {}", e.to_string().to_lowercase()))
                        .at(span, "imported here")
                        .hint("import paths are relative to the importing file"),
                );
                return None;
            }
        };
        if let Some(pos) = self.stack.iter().position(|(c, _)| *c == canonical) {
            let mut chain: Vec<String> = self.stack[pos..].iter().map(|(_, n)| format!("`{n}`")).collect();
            chain.push(format!("`{}`", self.stack[pos].1));
            self.diags.push(
                Diagnostic::error(codes::IMPORT_CYCLE, format!("import cycle: {}", chain.join(" -> ")))
                    .at(span, "this import closes the cycle")
                    .hint("move what both files need into a third file that imports neither"),
            );
            return None;
        }
        if let Some(id) = self.by_path.get(&canonical) {
            return Some(*id);
        }
        let text = match std::fs::read_to_string(&canonical) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(
                    Diagnostic::error(codes::IMPORT, format!("cannot read the imported file `{p}`: {}", e.to_string().to_lowercase()))
                        .at(span, "imported here"),
                );
                return None;
            }
        };
        let file = sources.add(display.clone(), text.clone());
        let (ast, diags) = tfm_syntax::parse(&text, file);
        self.diags.extend(diags);
        let id = self.add_module(vec![(file, ast)], false);
        self.by_path.insert(canonical.clone(), id);
        self.stack.push((canonical.clone(), display.clone()));
        let sub_dir = canonical.parent().map(Path::to_path_buf).unwrap_or_default();
        self.resolve_imports(id, &sub_dir, &display, sources);
        self.stack.pop();
        Some(id)
    }
}

/// Parses a standard-library file once per process and file id: the parse depends only on the
/// (embedded, constant) text and the id, and checking a folder imports std once per spec.
fn parse_std(name: &'static str, text: &'static str, file: FileId) -> (tfm_syntax::ast::File, Vec<Diagnostic>) {
    type Cache = Mutex<HashMap<(u32, &'static str), (tfm_syntax::ast::File, Vec<Diagnostic>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&(file.0, name)).cloned()) {
        return hit;
    }
    let parsed = tfm_syntax::parse(text, file);
    if let Ok(mut c) = cache.lock() {
        c.insert((file.0, name), parsed.clone());
    }
    parsed
}
