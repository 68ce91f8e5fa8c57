-- wrk script: POST ["MANGO", 2] to the fruit app (three handle hops: proxy -> FruitMarket ->
-- MangoStand, and back).
wrk.method = "POST"
wrk.body = '["MANGO", 2]'
wrk.headers["Content-Type"] = "application/json"
