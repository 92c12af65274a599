-- wrk: POST a valid 1 KiB JSON order (validated against examples/traffic/orders.openapi.yaml).
local items = {}
for i = 1, 30 do
  items[#items + 1] = string.format('{"sku":"SKU-%04d","quantity":%d}', i, i)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Tenant-Id"] = "t-1"
wrk.body = '{"items":[' .. table.concat(items, ",") .. '],"note":"bench"}'
