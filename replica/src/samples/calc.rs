//! KubeRay's calculator (`conditional_dag.serve_dag`): `Router` sends `["ADD", x]` to `Adder`
//! and `["MUL", x]` to `Multiplier` and answers `"{amount} pizzas please!"`. The code-level
//! `runtime_env.env_vars` (`override_increment`, `override_factor`) take effect only when the
//! config leaves `ray_actor_options` unset, exactly as in Ray.

use std::sync::{Arc, RwLock};

use photon_router::DeploymentHandle;
use serde_json::{json, Value};

use super::config_get;
use crate::deployment::{call_handle, BuildContext, Deployment, DeploymentError, Reply, Request};
use crate::pyvalue;
use crate::registry::{AppDef, DeploymentDef};

/// `Adder` and `Multiplier`: one operand from `user_config`, or from an environment override.
struct Operator {
    method: &'static str,
    config_key: &'static str,
    override_var: &'static str,
    apply: fn(&Value, &Value) -> pyvalue::PyResult<Value>,
    operand: RwLock<Value>,
}

#[async_trait::async_trait]
impl Deployment for Operator {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        if request.method != self.method {
            return Err(DeploymentError(format!("AttributeError: no method {:?}", request.method)));
        }
        let input = request.arg(0)?;
        let operand = match std::env::var(self.override_var) {
            Ok(text) => json!(text
                .trim()
                .parse::<i64>()
                .map_err(|e| DeploymentError(format!("ValueError: int({text:?}): {e}")))?),
            Err(_) => self.operand.read().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        Reply::json(&(self.apply)(&input, &operand)?)
    }

    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        let v = config_get(user_config, self.config_key, json!(-1))?;
        *self.operand.write().unwrap_or_else(|e| e.into_inner()) = v;
        Ok(())
    }
}

struct CalcRouter {
    adder: DeploymentHandle,
    multiplier: DeploymentHandle,
}

#[async_trait::async_trait]
impl Deployment for CalcRouter {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        let (op, input) = pyvalue::unpack2(&request.json()?)?;
        let amount = match op.as_str() {
            Some("ADD") => call_handle(&self.adder, "add", json!([input]), &request.request_id).await?,
            Some("MUL") => call_handle(&self.multiplier, "multiply", json!([input]), &request.request_id).await?,
            _ => return Err("UnboundLocalError: local variable 'amount' referenced before assignment".into()),
        };
        Ok(Reply::text(format!("{} pizzas please!", pyvalue::str(&amount))))
    }
}

pub(super) fn app() -> AppDef {
    AppDef {
        import_path: "conditional_dag.serve_dag",
        ingress: "Router",
        deployments: vec![
            DeploymentDef {
                name: "Multiplier",
                defaults: json!({"name": "Multiplier", "user_config": {"factor": 3},
                    "ray_actor_options": {"num_cpus": 0.1, "runtime_env": {"env_vars": {"override_factor": "-2"}}}}),
                build: |_| {
                    Ok(Arc::new(Operator {
                        method: "multiply",
                        config_key: "factor",
                        override_var: "override_factor",
                        apply: pyvalue::mul,
                        operand: RwLock::new(json!(1)),
                    }))
                },
            },
            DeploymentDef {
                name: "Adder",
                defaults: json!({"name": "Adder", "user_config": {"increment": 2},
                    "ray_actor_options": {"num_cpus": 0.1, "runtime_env": {"env_vars": {"override_increment": "-2"}}}}),
                build: |_| {
                    Ok(Arc::new(Operator {
                        method: "add",
                        config_key: "increment",
                        override_var: "override_increment",
                        apply: pyvalue::add,
                        operand: RwLock::new(json!(1)),
                    }))
                },
            },
            DeploymentDef {
                name: "Router",
                defaults: json!({"name": "Router", "ray_actor_options": {"num_cpus": 0.1}}),
                build: |ctx: &BuildContext| {
                    Ok(Arc::new(CalcRouter { adder: ctx.handle("Adder"), multiplier: ctx.handle("Multiplier") }))
                },
            },
        ],
    }
}
