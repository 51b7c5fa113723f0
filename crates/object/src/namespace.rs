//! Classes, their instances, and modules: objects with attributes.
//!
//! Attributes live in a dict table inside the object (guarded by the object's own lock), keyed
//! by strings: reading one takes no lock, exactly like a dict lookup. Classes are immortal: they
//! live as long as the program and every instance points at one, so counting them would only
//! make threads fight over the class's count.

use std::fmt::{self, Formatter};

use ftrt_gil::Python;

use crate::borrowed::Borrowed;
use crate::bound::Bound;
use crate::dict::DictPayload;
use crate::error::{Error, Result};
use crate::header::{allocate, allocate_immortal, Header, Kind, TypeObject};
use crate::slots::{Payload, Repr};
use crate::string::PyStr;
use crate::types::{py_type, PyAny, PyTypeInfo};

py_type!(
    /// A user-defined class (immortal). [`instantiate`](Bound::instantiate) makes instances.
    PyClass, "type", Kind::Class, ClassPayload
);
py_type!(
    /// An instance of a user-defined class: an object with attributes.
    PyInstance, "instance", Kind::Instance, InstancePayload
);
py_type!(
    /// A module: a named namespace of shared variables (its attributes).
    PyModule, "module", Kind::Module, ModulePayload
);

pub(crate) struct ClassPayload {
    instance_type: &'static TypeObject,
}

pub(crate) struct InstancePayload {
    attrs: DictPayload,
}

pub(crate) struct ModulePayload {
    name: Box<str>,
    attrs: DictPayload,
}

pub(crate) static CLASS_TYPE: TypeObject = TypeObject::new::<ClassPayload>("type", Kind::Class);
pub(crate) static MODULE_TYPE: TypeObject =
    TypeObject::new::<ModulePayload>("module", Kind::Module);

impl Payload for ClassPayload {
    fn repr(&self, _: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        write!(f, "<class '{}'>", self.instance_type.name)
    }
}

impl Payload for InstancePayload {
    const HOLDS_CHANGE: bool = true;
    const HOLDS_REFERENCES: bool = true;

    fn repr(&self, this: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        write!(f, "<{} object at {:p}>", this.type_name(), this.ptr())
    }

    unsafe fn clear(&self, this: &Header, py: Python<'_>) {
        // SAFETY: `this` heads the object holding this payload (the slot's contract).
        unsafe { self.attrs.clear_entries(py, this) };
    }

    unsafe fn traverse(&self, visit: &mut dyn FnMut(Borrowed<'_>)) {
        // SAFETY: forwarded: the instance's lock guards its attributes.
        unsafe { self.attrs.traverse(visit) }
    }
}

impl Payload for ModulePayload {
    const HOLDS_CHANGE: bool = true;
    const HOLDS_REFERENCES: bool = true;

    fn repr(&self, _: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        write!(f, "<module '{}'>", self.name)
    }

    unsafe fn clear(&self, this: &Header, py: Python<'_>) {
        // SAFETY: `this` heads the object holding this payload (the slot's contract).
        unsafe { self.attrs.clear_entries(py, this) };
    }

    unsafe fn traverse(&self, visit: &mut dyn FnMut(Borrowed<'_>)) {
        // SAFETY: forwarded: the module's lock guards its attributes.
        unsafe { self.attrs.traverse(visit) }
    }
}

impl PyClass {
    /// A new class named `name` (immortal). `ValueError` for an empty name.
    pub fn new<'py>(py: Python<'py>, name: &str) -> Result<Bound<'py, PyClass>> {
        ftrt_gil::assert_attached();
        if name.is_empty() {
            return Err(Error::ValueError("a class needs a name".into()));
        }
        // Classes are never freed, so their type objects and names may be leaked.
        let name: &'static str = Box::leak(name.into());
        let instance_type: &'static TypeObject = Box::leak(Box::new(TypeObject::new::<
            InstancePayload,
        >(
            name, Kind::Instance
        )));
        let class = allocate_immortal(&CLASS_TYPE, ClassPayload { instance_type });
        // SAFETY: immortal, so alive; a class.
        Ok(unsafe { Bound::from_borrowed(py, class) })
    }
}

impl<'py> Bound<'py, PyClass> {
    /// The class's name.
    pub fn name(&self) -> &'static str {
        self.payload().instance_type.name
    }

    /// A new instance of this class, with no attributes.
    pub fn instantiate(&self) -> Bound<'py, PyInstance> {
        let attrs = DictPayload::new();
        let instance_type = self.payload().instance_type;
        #[allow(clippy::let_unit_value)] // the token is `()` in the atomic-rc build
        // SAFETY: the token is used for this allocation only, attached (checked as it is made).
        let token = unsafe { self.py().new_object_token() };
        let instance = allocate(instance_type, InstancePayload { attrs }, token);
        // SAFETY: a fresh instance's one reference goes to the caller.
        unsafe { Bound::from_owned(instance) }
    }
}

impl PyModule {
    /// A new module named `name`.
    pub fn new<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyModule> {
        let module = ModulePayload {
            name: name.into(),
            attrs: DictPayload::new(),
        };
        // SAFETY: a fresh module's one reference goes to the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe { Bound::from_owned(allocate(&MODULE_TYPE, module, py.new_object_token())) }
    }
}

impl Bound<'_, PyModule> {
    /// The module's name.
    pub fn name(&self) -> &str {
        &self.payload().name
    }

    fn attrs(&self) -> &DictPayload {
        &self.payload().attrs
    }
}

impl Bound<'_, PyInstance> {
    fn attrs(&self) -> &DictPayload {
        &self.payload().attrs
    }
}

fn no_attribute(object: &Bound<'_, PyAny>, name: &Bound<'_, PyStr>) -> Error {
    Error::AttributeError(format!(
        "'{}' object has no attribute '{}'",
        object.type_name(),
        name.to_str()
    ))
}

/// The attribute methods of the objects that have attributes (instances and modules): their
/// attribute table is a dict table keyed by strings, guarded by the object's own lock, and read
/// without a lock.
macro_rules! attribute_methods {
    ($marker:ident) => {
        impl<'py> Bound<'py, $marker> {
            /// Sets an attribute. `name` is ideally interned.
            pub fn set_attr<V: PyTypeInfo>(
                &self,
                name: &Bound<'py, PyStr>,
                value: Bound<'py, V>,
            ) -> Result<()> {
                // SAFETY: the header of the object whose attributes these are.
                unsafe { self.attrs().set(self.header(), name, value) }
            }

            /// Reads an attribute, without a lock; `AttributeError` if absent.
            pub fn get_attr(&self, name: &Bound<'py, PyStr>) -> Result<Bound<'py, PyAny>> {
                // SAFETY: the header of the object whose attributes these are.
                unsafe { self.attrs().get(self.header(), name) }?
                    .ok_or_else(|| no_attribute(self, name))
            }

            /// Reads an attribute without a lock and without counting. The value lives as long
            /// as both this handle and `guard` are borrowed: the attribute may be replaced or
            /// deleted meanwhile, on this thread or another, and the old value stays alive until
            /// the guard is gone. Threads that all read one shared object's attribute this way
            /// touch no shared cache line.
            ///
            /// ```
            /// use ftrt_gil::Python;
            /// use ftrt_object::{PyClass, PyFloat, PyStr, ReadGuard};
            ///
            /// Python::attach(|py| {
            ///     let point = PyClass::new(py, "Point").unwrap().instantiate();
            ///     let x = PyStr::intern(py, "x");
            ///     point.set_attr(&x, PyFloat::new(py, 2.5)).unwrap();
            ///     let guard = ReadGuard::new(py);
            ///     let old = point.get_attr_borrowed(&x, &guard).unwrap();
            ///     point.set_attr(&x, PyFloat::new(py, 3.5)).unwrap();
            ///     assert_eq!(old.to_f64(), Ok(2.5));
            /// });
            /// ```
            pub fn get_attr_borrowed<'g>(
                &'g self,
                name: &Bound<'py, PyStr>,
                guard: &'g crate::ReadGuard<'_>,
            ) -> Result<Borrowed<'g>> {
                // SAFETY: `self` is borrowed for `'g` and keeps the object, and so its table,
                // alive.
                unsafe { self.attrs().get_borrowed(name, guard) }?
                    .ok_or_else(|| no_attribute(self, name))
            }

            /// Deletes an attribute; `AttributeError` if absent.
            pub fn del_attr(&self, name: &Bound<'py, PyStr>) -> Result<()> {
                // SAFETY: the header of the object whose attributes these are.
                if unsafe { self.attrs().delete(self.header(), name) }? {
                    Ok(())
                } else {
                    Err(no_attribute(self, name))
                }
            }

            /// How many attributes the object has.
            pub fn attr_count(&self) -> usize {
                self.attrs().len()
            }
        }
    };
}

attribute_methods!(PyInstance);
attribute_methods!(PyModule);
