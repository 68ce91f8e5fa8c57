//! What a node offers replicas (CPUs, GPUs, memory) and the bookkeeping that places replicas
//! on it, with Ray's rules: `num_cpus` and `memory` add up; `num_gpus` up to 1 is a share of one
//! GPU (fractions of the same GPU add up to at most 1), above 1 a whole number of GPUs.

use std::collections::BTreeMap;

/// Float slack so that ten replicas of 0.1 GPU fit on one GPU.
const EPS: f64 = 1e-9;

/// What one node offers.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResources {
    /// Logical CPUs.
    pub cpus: f64,
    /// GPU ids, as `CUDA_VISIBLE_DEVICES` names them.
    pub gpus: Vec<u32>,
    /// Memory for replicas, bytes.
    pub memory_bytes: f64,
}

impl NodeResources {
    /// This machine: its CPUs, the GPUs `nvidia-smi` lists (narrowed by this process's own
    /// `CUDA_VISIBLE_DEVICES`), and its available memory. `cpus` / `gpus` / `memory_bytes`
    /// override what is found (`photon run --num-cpus/--num-gpus/--memory`).
    pub fn detect(cpus: Option<f64>, gpus: Option<u32>, memory_bytes: Option<f64>) -> Self {
        let gpus = match gpus {
            Some(n) => (0..n).collect(),
            None => visible_gpus(),
        };
        NodeResources {
            cpus: cpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f64),
            gpus,
            memory_bytes: memory_bytes.unwrap_or_else(available_memory),
        }
    }

    /// A Kubernetes cluster: its scheduler places replica pods (a pod that fits nowhere stays
    /// Pending, which its status shows), so the controller sets no limit of its own. GPU ids
    /// are only bookkeeping there: the device plugin picks the devices a pod sees.
    pub fn cluster() -> Self {
        NodeResources { cpus: f64::INFINITY, gpus: (0..1024).collect(), memory_bytes: f64::INFINITY }
    }

    /// Ray's resource-dict form: `{"CPU": 2.0, "GPU": 0.0, "memory": ...}`.
    pub fn describe(&self) -> String {
        format!(
            "{{\"CPU\": {:.1}, \"GPU\": {:.1}, \"memory\": {:.0}}}",
            self.cpus,
            self.gpus.len() as f64,
            self.memory_bytes
        )
    }
}

fn visible_gpus() -> Vec<u32> {
    let found: Vec<u32> = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=index", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(visible) => {
            visible.split(',').filter_map(|s| s.trim().parse().ok()).filter(|id| found.contains(id)).collect()
        }
        Err(_) => found,
    }
}

fn available_memory() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::MAX, |kb| kb * 1024.0)
}

/// What one replica asks for (`ray_actor_options`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceRequest {
    /// `num_cpus`.
    pub cpus: f64,
    /// `num_gpus`.
    pub gpus: f64,
    /// `memory`, bytes.
    pub memory_bytes: f64,
}

impl ResourceRequest {
    /// Ray's resource-dict form, listing only what is asked for (CPU always).
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("\"CPU\": {}", self.cpus)];
        if self.gpus > 0.0 {
            parts.push(format!("\"GPU\": {}", self.gpus));
        }
        if self.memory_bytes > 0.0 {
            parts.push(format!("\"memory\": {:.0}", self.memory_bytes));
        }
        format!("{{{}}}", parts.join(", "))
    }

    /// The share of each of its GPUs this request holds.
    fn per_gpu(&self) -> f64 {
        self.gpus.min(1.0)
    }

    /// How many GPUs it spans.
    fn gpu_count(&self) -> usize {
        if self.gpus <= 0.0 {
            0
        } else {
            self.gpus.max(1.0).round() as usize
        }
    }
}

/// What the replicas on a node hold now.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    cpus: f64,
    memory_bytes: f64,
    gpu_share: BTreeMap<u32, f64>,
}

impl Usage {
    /// Adds a replica's hold.
    pub fn hold(&mut self, request: &ResourceRequest, gpu_ids: &[u32]) {
        self.cpus += request.cpus;
        self.memory_bytes += request.memory_bytes;
        for id in gpu_ids {
            *self.gpu_share.entry(*id).or_default() += request.per_gpu();
        }
    }

    /// Takes a replica's hold back.
    pub fn release(&mut self, request: &ResourceRequest, gpu_ids: &[u32]) {
        self.cpus -= request.cpus;
        self.memory_bytes -= request.memory_bytes;
        for id in gpu_ids {
            *self.gpu_share.entry(*id).or_default() -= request.per_gpu();
        }
    }

    /// Places `request` on `node` and holds it: the GPU ids it gets. When it does not fit, what
    /// is short, e.g. `GPU (needs 1, 0 of 0 free)`.
    pub fn place(&mut self, node: &NodeResources, request: &ResourceRequest) -> Result<Vec<u32>, String> {
        let mut short = Vec::new();
        if self.cpus + request.cpus > node.cpus + EPS {
            short.push(format!("CPU (needs {}, {} of {} free)", request.cpus, free(node.cpus, self.cpus), node.cpus));
        }
        if self.memory_bytes + request.memory_bytes > node.memory_bytes + EPS {
            short.push(format!(
                "memory (needs {:.0}, {:.0} of {:.0} free)",
                request.memory_bytes,
                free(node.memory_bytes, self.memory_bytes),
                node.memory_bytes
            ));
        }
        let mut gpu_ids = Vec::new();
        let count = request.gpu_count();
        if count > 0 {
            let share = request.per_gpu();
            gpu_ids = node
                .gpus
                .iter()
                .copied()
                .filter(|id| self.gpu_share.get(id).copied().unwrap_or(0.0) + share <= 1.0 + EPS)
                .take(count)
                .collect();
            if gpu_ids.len() < count {
                let free_gpus: f64 = node
                    .gpus
                    .iter()
                    .map(|id| free(1.0, self.gpu_share.get(id).copied().unwrap_or(0.0)))
                    .fold(0.0, |a, b| a + b);
                short.push(format!("GPU (needs {}, {} of {} free)", request.gpus, free_gpus, node.gpus.len()));
            }
        }
        if !short.is_empty() {
            return Err(short.join(", "));
        }
        self.hold(request, &gpu_ids);
        Ok(gpu_ids)
    }
}

fn free(total: f64, used: f64) -> f64 {
    ((total - used).max(0.0) * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpus: f64, gpus: u32) -> NodeResources {
        NodeResources { cpus, gpus: (0..gpus).collect(), memory_bytes: 1e9 }
    }

    fn ask(cpus: f64, gpus: f64) -> ResourceRequest {
        ResourceRequest { cpus, gpus, memory_bytes: 0.0 }
    }

    #[test]
    fn cpus_and_memory_add_up() {
        let n = node(2.0, 0);
        let mut u = Usage::default();
        assert!(u.place(&n, &ask(1.0, 0.0)).is_ok());
        assert!(u.place(&n, &ask(1.0, 0.0)).is_ok());
        assert_eq!(u.place(&n, &ask(0.5, 0.0)).unwrap_err(), "CPU (needs 0.5, 0 of 2 free)");
        u.release(&ask(1.0, 0.0), &[]);
        assert!(u.place(&n, &ask(0.5, 0.0)).is_ok());
        let big = ResourceRequest { cpus: 0.0, gpus: 0.0, memory_bytes: 2e9 };
        assert!(u.place(&n, &big).unwrap_err().starts_with("memory (needs 2000000000"));
    }

    #[test]
    fn fractional_gpus_share_a_gpu_and_whole_ones_take_their_own() {
        let n = node(64.0, 2);
        let mut u = Usage::default();
        for _ in 0..10 {
            assert_eq!(u.place(&n, &ask(0.0, 0.1)).unwrap(), vec![0]);
        }
        assert_eq!(u.place(&n, &ask(0.0, 0.5)).unwrap(), vec![1]);
        assert_eq!(u.place(&n, &ask(0.0, 0.5)).unwrap(), vec![1]);
        assert!(u.place(&n, &ask(0.0, 0.1)).unwrap_err().starts_with("GPU (needs 0.1, 0 of 2 free)"));
        let mut u = Usage::default();
        assert_eq!(u.place(&n, &ask(0.0, 2.0)).unwrap(), vec![0, 1]);
    }

    #[test]
    fn no_gpu_on_the_node() {
        let mut u = Usage::default();
        assert_eq!(u.place(&node(8.0, 0), &ask(1.0, 1.0)).unwrap_err(), "GPU (needs 1, 0 of 0 free)");
    }
}
