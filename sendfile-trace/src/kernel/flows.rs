//! The kernel side of flows, seen from the daemon: the flow table (`FLOWS`), the free-slot queue
//! (`FLOW_FREE`) and the counters (`FLOW_SLOTS`), mapped into this process so that they are read
//! and reset with atomic exchanges (see `docs/flows.md` for why that is exact).

use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering::SeqCst},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, Queue},
};
use sendfile_trace_common::flow::{FlowKey, FlowRef, FlowSlot, SLOTS, names, word};

use crate::error::{LoadError, one_line};

/// Puts every slot in the free queue (before any program is attached).
pub fn fill_free(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let name = names::FLOW_FREE;
    let map_err = |source| LoadError::Map { name, source };
    let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
    let mut q: Queue<_, u32> = Queue::try_from(map).map_err(map_err)?;
    for slot in 0..SLOTS {
        q.push(&slot, 0).map_err(map_err)?;
    }
    Ok(())
}

/// The counters of every slot, mapped read-write (`BPF_F_MMAPABLE`).
pub struct Slots {
    base: *mut AtomicU64,
    len: usize,
}

// SAFETY: the mapping lives as long as this value and is only accessed through atomics.
unsafe impl Send for Slots {}

impl Slots {
    /// Zeroed counters in anonymous memory, laid out as the kernel's (for tests).
    pub fn anonymous() -> std::io::Result<Slots> {
        let len = (SLOTS as usize * size_of::<FlowSlot>()).div_ceil(4096) * 4096;
        // SAFETY: a fresh private anonymous mapping, zero-filled by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Slots {
            base: p.cast(),
            len,
        })
    }

    fn map(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Slots> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = SLOTS as usize * size_of::<FlowSlot>();
        let len = bytes.div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of the array map's values, which the kernel lays out as
        // `SLOTS` consecutive `FlowSlot`s from offset 0 (array maps with BPF_F_MMAPABLE).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Slots {
            base: p.cast(),
            len,
        })
    }

    /// One word of one slot (`w` from [`word`]).
    pub fn word(&self, slot: u32, w: usize) -> &AtomicU64 {
        assert!(slot < SLOTS && w < word::COUNT, "slot {slot} word {w}");
        // SAFETY: in bounds (checked above) of a mapping that lives as long as `self`; the
        // kernel side changes these words only atomically or with aligned 64-bit stores.
        unsafe { &*self.base.add(slot as usize * word::COUNT + w) }
    }

    /// Reads a word.
    pub fn load(&self, slot: u32, w: usize) -> u64 {
        self.word(slot, w).load(SeqCst)
    }

    /// Reads a word and sets it to 0 in one atomic step.
    pub fn take(&self, slot: u32, w: usize) -> u64 {
        self.word(slot, w).swap(0, SeqCst)
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// What the daemon needs of the kernel side to retire flows.
pub trait FlowKernel {
    /// The counters.
    fn slots(&self) -> &Slots;
    /// Removes a flow's key (new calls then start a new flow); a missing key is fine.
    fn forget(&mut self, key: &FlowKey);
    /// Returns a retired slot to the free queue.
    fn free(&mut self, slot: u32);
}

/// The flow maps of a loaded object.
pub struct FlowMaps {
    flows: BpfHashMap<MapData, FlowKey, FlowRef>,
    free: Queue<MapData, u32>,
    slots: Slots,
    /// Kept open for as long as `slots` maps it.
    _slots_map: MapData,
}

impl FlowMaps {
    /// Takes the flow maps out of the object and maps the counters.
    pub fn take(ebpf: &mut Ebpf) -> Result<FlowMaps, LoadError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LoadError::MissingMap(name));
        let map_err = |name| move |source| LoadError::Map { name, source };
        let flows = BpfHashMap::try_from(take(names::FLOWS)?).map_err(map_err(names::FLOWS))?;
        let free = Queue::try_from(take(names::FLOW_FREE)?).map_err(map_err(names::FLOW_FREE))?;
        let aya::maps::Map::Array(slots_map) = take(names::FLOW_SLOTS)? else {
            return Err(LoadError::MapKind {
                name: names::FLOW_SLOTS,
                expected: "an array",
            });
        };
        let slots = Slots::map(slots_map.fd().as_fd()).map_err(|source| LoadError::Mmap {
            name: names::FLOW_SLOTS,
            source,
        })?;
        Ok(FlowMaps {
            flows,
            free,
            slots,
            _slots_map: slots_map,
        })
    }
}

impl FlowKernel for FlowMaps {
    fn slots(&self) -> &Slots {
        &self.slots
    }

    fn forget(&mut self, key: &FlowKey) {
        if let Err(e) = self.flows.remove(key) {
            log::debug!("flow key already gone: {}", one_line(&e));
        }
    }

    fn free(&mut self, slot: u32) {
        if let Err(e) = self.free.push(&slot, 0) {
            // Cannot happen (the queue holds every slot); the table is one slot smaller if it does.
            log::error!(
                "cannot return flow slot {slot} to the free queue: {}",
                one_line(&e)
            );
        }
    }
}
