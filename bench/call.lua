wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"module":"Counter","id":"c-%d","capability":"counter"}', counter % 1000)
  return wrk.format(nil, "/call", nil, body)
end
