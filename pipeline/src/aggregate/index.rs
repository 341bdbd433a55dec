//! Which meters each data file holds, per partition: how the materializer reads
//! and rewrites only the files of the meters that changed.
//!
//! A partition's entry is made by reading the `meter` column of its files once,
//! then kept exact by the caller: files it adds (whose meters it knows) and files
//! it removes. Meters are 64-bit hashes ([`MeterHasher`]); a collision only makes
//! a file look relevant. Nothing here leaves the process; the whole index is
//! dropped when the tables change behind the materializer's back.
//!
//! Bounded: past `max_entries` (file, meter) pairs in all, the partitions used
//! least recently are forgotten and read again when needed. A partition larger
//! than the bound is never kept: all its files count as relevant.

use std::collections::{BTreeMap, HashMap};

use meterline_operators::aggregate::MeterSet;
use meterline_sinks::{DataFile, Partition};

#[derive(Debug, Default)]
struct Entry {
    files: BTreeMap<String, (DataFile, MeterSet)>,
    entries: usize,
    last_used: u64,
}

/// The meters of the files of the partitions known, for one table.
#[derive(Debug)]
pub struct FileIndex {
    partitions: HashMap<Partition, Entry>,
    entries: usize,
    max_entries: usize,
    tick: u64,
}

impl FileIndex {
    pub fn new(max_entries: usize) -> Self {
        Self {
            partitions: HashMap::new(),
            entries: 0,
            max_entries,
            tick: 0,
        }
    }

    pub fn knows(&self, partition: &Partition) -> bool {
        self.partitions.contains_key(partition)
    }

    /// Hold `partition` as these files with these meters (replacing what was held).
    /// Returns false (and holds nothing) when it alone is over the bound.
    pub fn load(&mut self, partition: &Partition, files: Vec<(DataFile, MeterSet)>) -> bool {
        self.forget(partition);
        let entries: usize = files.iter().map(|(_, m)| m.len()).sum();
        if entries > self.max_entries {
            return false;
        }
        self.tick += 1;
        let entry = Entry {
            files: files
                .into_iter()
                .map(|(f, m)| (f.path.clone(), (f, m)))
                .collect(),
            entries,
            last_used: self.tick,
        };
        self.entries += entries;
        self.partitions.insert(partition.clone(), entry);
        self.evict(partition);
        true
    }

    /// A file added to a known partition (ignored for partitions not held).
    pub fn add(&mut self, file: DataFile, meters: MeterSet) {
        let partition = file.partition.clone();
        let Some(entry) = self.partitions.get_mut(&partition) else {
            return;
        };
        let n = meters.len();
        if let Some((_, old)) = entry.files.insert(file.path.clone(), (file, meters)) {
            entry.entries -= old.len();
            self.entries -= old.len();
        }
        entry.entries += n;
        self.entries += n;
        if entry.entries > self.max_entries {
            self.forget(&partition);
        } else {
            self.evict(&partition);
        }
    }

    /// Files removed from a partition.
    pub fn remove(&mut self, files: &[DataFile]) {
        for f in files {
            if let Some(entry) = self.partitions.get_mut(&f.partition) {
                if let Some((_, old)) = entry.files.remove(&f.path) {
                    entry.entries -= old.len();
                    self.entries -= old.len();
                }
            }
        }
    }

    pub fn forget(&mut self, partition: &Partition) {
        if let Some(entry) = self.partitions.remove(partition) {
            self.entries -= entry.entries;
        }
    }

    pub fn clear(&mut self) {
        self.partitions.clear();
        self.entries = 0;
    }

    /// The files of a known partition holding any of `meters` (`None`: not known).
    pub fn files_with(
        &mut self,
        partition: &Partition,
        meters: &MeterSet,
    ) -> Option<Vec<DataFile>> {
        self.tick += 1;
        let entry = self.partitions.get_mut(partition)?;
        entry.last_used = self.tick;
        Some(
            entry
                .files
                .values()
                .filter(|(_, held)| {
                    if held.len() < meters.len() {
                        held.iter().any(|h| meters.contains(h))
                    } else {
                        meters.iter().any(|m| held.contains(m))
                    }
                })
                .map(|(f, _)| f.clone())
                .collect(),
        )
    }

    /// Every meter of a known partition (`None`: not known).
    pub fn meters(&self, partition: &Partition) -> Option<MeterSet> {
        let entry = self.partitions.get(partition)?;
        let mut all = MeterSet::default();
        for (_, m) in entry.files.values() {
            all.extend(m.iter().copied());
        }
        Some(all)
    }

    /// Forget the least recently used partitions (never `keep`) until under the bound.
    fn evict(&mut self, keep: &Partition) {
        while self.entries > self.max_entries {
            let oldest = self
                .partitions
                .iter()
                .filter(|(p, _)| *p != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(p, _)| p.clone());
            match oldest {
                Some(p) => self.forget(&p),
                None => break,
            }
        }
    }
}
