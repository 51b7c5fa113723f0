//! Classes, their instances, and modules: objects with attributes.
//!
//! Attributes live in a dict table inside the object (guarded by the object's own lock), keyed
//! by strings: reading one takes no lock, exactly like a dict lookup. Classes are immortal: they
//! live as long as the program and every instance points at one, so counting them would only
//! make threads fight over the class's count.

use std::ptr::NonNull;

use ftrt_gil::Python;

use crate::dict::DictPayload;
use crate::error::{Error, Result};
use crate::guard::ReadGuard;
use crate::header::{allocate, allocate_immortal, header, payload, Header, Kind, TypeObject};
use crate::refs::{Borrowed, Obj};

pub(crate) struct ClassPayload {
    pub(crate) instance_type: &'static TypeObject,
}

pub(crate) struct InstancePayload {
    pub(crate) attrs: DictPayload,
}

pub(crate) struct ModulePayload {
    pub(crate) name: Box<str>,
    pub(crate) attrs: DictPayload,
}

pub(crate) static CLASS_TYPE: TypeObject = TypeObject::new::<ClassPayload>("type", Kind::Class);
pub(crate) static MODULE_TYPE: TypeObject =
    TypeObject::new::<ModulePayload>("module", Kind::Module);

impl<'py> Obj<'py> {
    /// A new class named `name` (immortal). `ValueError` for an empty name.
    pub fn class(py: Python<'py>, name: &str) -> Result<Self> {
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
        // SAFETY: immortal: always alive.
        Ok(unsafe { Obj::from_borrowed(py, class) })
    }

    /// A new instance of this class, with no attributes.
    pub fn instantiate(&self) -> Result<Obj<'py>> {
        if self.kind() != Kind::Class {
            return Err(Error::TypeError(format!(
                "'{}' object is not callable",
                self.type_name()
            )));
        }
        // SAFETY: kind checked; alive.
        let class = unsafe { payload::<ClassPayload>(self.ptr()) };
        let instance = allocate(
            class.instance_type,
            InstancePayload {
                attrs: DictPayload::new(),
            },
            self.py().count_token(),
        );
        // SAFETY: a fresh object's one reference goes to the caller.
        Ok(unsafe { Obj::from_owned(instance) })
    }

    /// A new module (a namespace of shared variables) named `name`.
    pub fn module(py: Python<'py>, name: &str) -> Self {
        let module = ModulePayload {
            name: name.into(),
            attrs: DictPayload::new(),
        };
        // SAFETY: a fresh object's one reference goes to the caller.
        unsafe { Obj::from_owned(allocate(&MODULE_TYPE, module, py.count_token())) }
    }

    fn attrs(&self) -> Result<&DictPayload> {
        // SAFETY: this reference keeps the object alive while `self` is borrowed.
        unsafe { attrs_of(self.ptr()) }.ok_or_else(|| {
            Error::AttributeError(format!("'{}' object has no attributes", self.type_name()))
        })
    }

    fn check_name(name: &Obj<'py>) -> Result<()> {
        if name.kind() == Kind::Str {
            Ok(())
        } else {
            Err(Error::TypeError(format!(
                "attribute name must be string, not '{}'",
                name.type_name()
            )))
        }
    }

    fn no_attribute(&self, name: &Obj<'py>) -> Error {
        let name = name.to_str().unwrap_or("?");
        Error::AttributeError(format!(
            "'{}' object has no attribute '{name}'",
            self.type_name()
        ))
    }

    /// Sets an attribute of an instance or a module (a global). `name` is a `str`, ideally
    /// interned.
    pub fn set_attr(&self, name: &Obj<'py>, value: Obj<'py>) -> Result<()> {
        Self::check_name(name)?;
        self.attrs()?.set(&self.header().lock, name, value)
    }

    /// Reads an attribute, without a lock.
    pub fn get_attr(&self, name: &Obj<'py>) -> Result<Obj<'py>> {
        Self::check_name(name)?;
        self.attrs()?
            .get(name)?
            .ok_or_else(|| self.no_attribute(name))
    }

    /// Reads an attribute without a lock and without counting. The value lives as long as both
    /// this handle and `guard` are borrowed: the attribute may be replaced or deleted meanwhile,
    /// on this thread or another, and the old value stays alive until the guard is gone. Threads
    /// that all read one shared instance's attribute this way touch no shared cache line.
    ///
    /// ```
    /// use ftrt_gil::Python;
    /// use ftrt_object::{Obj, ReadGuard};
    ///
    /// Python::attach(|py| {
    ///     let point = Obj::class(py, "Point").unwrap().instantiate().unwrap();
    ///     let x = Obj::intern(py, "x");
    ///     point.set_attr(&x, Obj::float(py, 2.5)).unwrap();
    ///     let guard = ReadGuard::new(py);
    ///     let old = point.get_attr_borrowed(&x, &guard).unwrap();
    ///     point.set_attr(&x, Obj::float(py, 3.5)).unwrap();
    ///     assert_eq!(old.to_f64(), Ok(2.5));
    /// });
    /// ```
    pub fn get_attr_borrowed<'g>(
        &'g self,
        name: &Obj<'py>,
        guard: &'g ReadGuard<'_>,
    ) -> Result<Borrowed<'g>> {
        Self::check_name(name)?;
        // SAFETY: `self` is borrowed for `'g` and keeps the object, and so its table, alive.
        unsafe { self.attrs()?.get_borrowed(name, guard) }?.ok_or_else(|| self.no_attribute(name))
    }

    /// Deletes an attribute.
    pub fn del_attr(&self, name: &Obj<'py>) -> Result<()> {
        Self::check_name(name)?;
        if self.attrs()?.delete(&self.header().lock, name)? {
            Ok(())
        } else {
            Err(self.no_attribute(name))
        }
    }
}

/// The attribute table of an instance or module.
///
/// # Safety
/// The object is alive for `'a`.
pub(crate) unsafe fn attrs_of<'a>(object: NonNull<Header>) -> Option<&'a DictPayload> {
    // SAFETY: alive for `'a` per the caller; the kind selects the payload.
    unsafe {
        match header(object).ty.kind {
            Kind::Instance => Some(&payload::<InstancePayload>(object).attrs),
            Kind::Module => Some(&payload::<ModulePayload>(object).attrs),
            _ => None,
        }
    }
}

/// A module's name.
///
/// # Safety
/// `object` is a module, alive for `'a`.
pub(crate) unsafe fn module_name<'a>(object: NonNull<Header>) -> &'a str {
    // SAFETY: per the contract.
    unsafe { &payload::<ModulePayload>(object).name }
}

/// A class's name.
///
/// # Safety
/// `object` is a class (classes are immortal, so it is alive).
pub(crate) unsafe fn class_name(object: NonNull<Header>) -> &'static str {
    // SAFETY: per the contract; the name lives in the class's leaked type object.
    unsafe { payload::<ClassPayload>(object) }
        .instance_type
        .name
}
