-- tools/bench-tracker.d/announce.lua: wrk script for tools/bench-tracker.
--
--   wrk ... -s announce.lua URL -- SCENARIO HASHES_FILE [PASSKEYS_FILE|-] [NUMWANT] [FORM]
--
-- SCENARIO  grow: one swarm (the first info-hash of HASHES_FILE) that grows by a peer per
--                 request: every request a new peer id and port.
--           org:  every info-hash of HASHES_FILE is a torrent of 10 peers (peer j of
--                 torrent t has a fixed peer id and port 20000 + j; peers 0-2 seed, the
--                 others leech); each request is a re-announce of a random peer of a
--                 random torrent.
-- HASHES_FILE    one hex info-hash per line.
-- PASSKEYS_FILE  one passkey per line, or "-" for none: each request goes to the
--                passkey of its simulated machine (grow: request i uses line i mod n;
--                org: peer j of torrent t is machine (10 t + j) mod n), else /announce.
-- FORM           where the passkey goes: "bep48" (default) /<passkey>/announce, the
--                form of a private tracker's announce URL (tracker.md §7.3); "suffix"
--                /announce/<passkey> (the same bytes in another order: opentracker
--                answers only this form and ignores the passkey).
-- Every request carries "Connection: close": a fresh TCP connection per announce, as real
-- clients open. done() prints one JSON line (requests, errors, latency percentiles in µs).

local PEERS_PER_TORRENT = 10
local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local function lines(path)
  local t = {}
  if path == nil or path == "-" then return t end
  local f = assert(io.open(path, "r"))
  for l in f:lines() do
    l = l:gsub("%s+", "")
    if #l > 0 then t[#t + 1] = l end
  end
  f:close()
  return t
end

local function hex_to_url(h)
  return (h:gsub("..", function(b) return "%" .. b:upper() end))
end

local scenario, hashes, passkeys, numwant, form
local counter = 0

function init(args)
  scenario = args[1] or "grow"
  hashes = lines(args[2])
  for i, h in ipairs(hashes) do hashes[i] = hex_to_url(h) end
  passkeys = lines(args[3])
  numwant = tonumber(args[4] or "50")
  form = args[5] or "bep48"
  assert(form == "bep48" or form == "suffix", "form is bep48 or suffix")
  assert(#hashes > 0, "no info-hashes")
  assert(scenario == "grow" or scenario == "org", "scenario is grow or org")
  -- Different threads and different runs never repeat a peer id in "grow".
  math.randomseed(os.time() * 1000 + (tid or 0))
  counter = math.random(0, 2^20) * 1000000
end

local function path_for(machine)
  if #passkeys == 0 then return "/announce" end
  local pk = passkeys[(machine % #passkeys) + 1]
  if form == "suffix" then return "/announce/" .. pk end
  return "/" .. pk .. "/announce"
end

local headers = { ["Connection"] = "close" }

function request()
  local ih, pid, port, left, machine
  if scenario == "grow" then
    counter = counter + 1
    ih = hashes[1]
    -- 20 bytes: "-WB0001-" and 12 digits (thread and counter).
    pid = string.format("-WB0001-%01d%011d", (tid or 0) % 10, counter % 100000000000)
    port = 1 + (counter % 65535)
    left = counter % 2 == 0 and 0 or 1000
    machine = counter
  else
    local t = math.random(0, #hashes - 1)
    local j = math.random(0, PEERS_PER_TORRENT - 1)
    ih = hashes[t + 1]
    pid = string.format("-WB0001-%07d%05d", t, j)
    port = 20000 + j
    left = j < 3 and 0 or 1000
    machine = t * PEERS_PER_TORRENT + j
  end
  local q = "?info_hash=" .. ih .. "&peer_id=" .. pid .. "&port=" .. port ..
            "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=" .. numwant
  return wrk.format("GET", path_for(machine) .. q, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
