//! KubeRay's fruit market (`fruit.deployment_graph`): `FruitMarket` looks the fruit up and asks
//! that fruit's stand for `price * amount` through a handle.

use std::sync::{Arc, RwLock};

use photon_router::DeploymentHandle;
use serde_json::{json, Value};

use super::config_get;
use crate::deployment::{call_handle, BuildContext, Deployment, DeploymentError, Reply, Request};
use crate::pyvalue;
use crate::registry::{AppDef, DeploymentDef};

/// A fruit stand: `check_price(amount)` answers `price * amount`.
struct Stand {
    default_price: Value,
    price: RwLock<Value>,
}

impl Stand {
    fn build(default_price: Value) -> Arc<dyn Deployment> {
        Arc::new(Stand { price: RwLock::new(default_price.clone()), default_price })
    }
}

#[async_trait::async_trait]
impl Deployment for Stand {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        match request.method.as_str() {
            "check_price" => {
                let amount = request.arg(0)?;
                let price = self.price.read().unwrap_or_else(|e| e.into_inner()).clone();
                Reply::json(&pyvalue::mul(&price, &amount)?)
            }
            other => Err(DeploymentError(format!("AttributeError: stand has no method {other:?}"))),
        }
    }

    async fn reconfigure(&self, user_config: Option<&Value>) -> Result<(), DeploymentError> {
        let price = config_get(user_config, "price", self.default_price.clone())?;
        *self.price.write().unwrap_or_else(|e| e.into_inner()) = price;
        Ok(())
    }
}

struct FruitMarket {
    mango: DeploymentHandle,
    orange: DeploymentHandle,
    pear: DeploymentHandle,
}

#[async_trait::async_trait]
impl Deployment for FruitMarket {
    async fn call(&self, request: Request) -> Result<Reply, DeploymentError> {
        let (fruit, amount) = pyvalue::unpack2(&request.json()?)?;
        if !pyvalue::hashable(&fruit) {
            return Err(DeploymentError(format!("TypeError: unhashable type: {}", pyvalue::repr(&fruit))));
        }
        let stand = match fruit.as_str() {
            Some("MANGO") => &self.mango,
            Some("ORANGE") => &self.orange,
            Some("PEAR") => &self.pear,
            _ => return Reply::json(&json!(-1)),
        };
        let price = call_handle(stand, "check_price", json!([amount]), &request.request_id).await?;
        Reply::json(&price)
    }
}

pub(super) fn app() -> AppDef {
    AppDef {
        import_path: "fruit.deployment_graph",
        ingress: "FruitMarket",
        deployments: vec![
            DeploymentDef {
                name: "MangoStand",
                defaults: json!({"name": "MangoStand", "user_config": {"price": 3}}),
                build: |_| Ok(Stand::build(json!(1))),
            },
            DeploymentDef {
                name: "OrangeStand",
                defaults: json!({"name": "OrangeStand", "user_config": {"price": 2}}),
                build: |_| Ok(Stand::build(json!(0.5))),
            },
            DeploymentDef {
                name: "PearStand",
                defaults: json!({"name": "PearStand", "user_config": {"price": 4}}),
                build: |_| Ok(Stand::build(json!(0.75))),
            },
            DeploymentDef {
                name: "FruitMarket",
                defaults: json!({"name": "FruitMarket", "num_replicas": 2}),
                build: |ctx: &BuildContext| {
                    Ok(Arc::new(FruitMarket {
                        mango: ctx.handle("MangoStand"),
                        orange: ctx.handle("OrangeStand"),
                        pear: ctx.handle("PearStand"),
                    }))
                },
            },
        ],
    }
}
