//! Comparing objects of different types is answered from their types, without allocating: an
//! equality test that formats a `TypeError` and throws it away would allocate on every mixed
//! comparison, and dict lookups compare keys inside the dict's critical section.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ftrt_gil::Python;
use ftrt_object::{PyDict, PyFloat, PyInt, PyStr};

/// The system allocator, counting each thread's allocations (this test binary's own; libraries
/// set none). Per thread, because the tests run side by side.
struct Counting;

thread_local! {
    // Const-initialised and without a destructor: usable from inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is only a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.get();
    f();
    ALLOCATIONS.get() - before
}

#[test]
fn equality_across_types_allocates_nothing() {
    Python::attach(|py| {
        let int = PyInt::new(py, 1000);
        let float = PyFloat::new(py, 1000.0);
        let text = PyStr::new(py, "1000");
        let pairs = [
            ("int == float", int.as_any(), float.as_any(), true),
            ("float == int", float.as_any(), int.as_any(), true),
            ("int == str", int.as_any(), text.as_any(), false),
            ("str == int", text.as_any(), int.as_any(), false),
            ("float == str", float.as_any(), text.as_any(), false),
            ("str == float", text.as_any(), float.as_any(), false),
        ];
        for (what, a, b, equal) in pairs {
            let mut answer = None;
            let allocated = allocations_during(|| answer = Some(std::hint::black_box(a.equals(b))));
            assert_eq!(answer, Some(equal), "{what}");
            assert_eq!(allocated, 0, "{what} allocated {allocated} times");
        }
    });
}

#[test]
fn a_dict_lookup_with_int_keys_allocates_nothing() {
    Python::attach(|py| {
        let dict = PyDict::new(py);
        for key in 0..64 {
            dict.set_item(PyInt::new(py, key * 1000).as_any(), PyInt::new(py, key))
                .unwrap();
        }
        let probe = PyInt::new(py, 7000);
        let mut found = None;
        let allocated = allocations_during(|| found = Some(dict.get_item(probe.as_any())));
        assert_eq!(found.unwrap().unwrap().to_i64().unwrap(), 7);
        assert_eq!(allocated, 0);
    });
}
