-- The history trim (src/bridge/trim.rs): bounds history lists by length and age, never removing what
-- catch-up has not read in a mirrored scope.
-- KEYS: pairs (history LIST, its checkpoint STRING), one pair per list.
-- ARGV[1] budget (entries one call may remove, examine or hash), ARGV[2] cutoff (Unix seconds,
--   '' for no age limit), ARGV[3] checkpoint search cap, ARGV[4] age chunk; then per pair
--   ARGV[3 + 2k] limit and ARGV[4 + 2k] watched ('1' when the scope is mirrored).
-- Returns per pair {by_limit, by_age, state}: state 0 done, 1 more to do (budget spent),
--   2 held back (mirrored and the checkpoint not found).
local budget, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
local search_cap, age_chunk = tonumber(ARGV[3]), tonumber(ARGV[4])
local min_progress = 1000

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Unix seconds of a timestamp in any form chatbridge reads, or nil.
local function seconds(ts)
  if type(ts) ~= 'string' then return nil end
  local y, mo, d, h, mi, s, rest =
    string.match(ts, '^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)(.*)$')
  if not y then return nil end
  y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then return nil end
  local fraction = 0
  local digits = string.match(rest, '^%.(%d+)')
  if digits then
    fraction = tonumber('0.' .. digits)
    rest = string.sub(rest, #digits + 2)
  end
  local offset = 0
  if rest ~= '' and rest ~= 'Z' then
    local sign, oh, om = string.match(rest, '^([+-])(%d%d):(%d%d)$')
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60
    if sign == '-' then offset = -offset end
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s + fraction - offset
end

local function stamp(entry)
  local ok, event = pcall(cjson.decode, entry)
  if ok and type(event) == 'table' then return seconds(event['timestamp']) end
  return nil
end

-- The index just below the checkpoint sequence (0-based), or nil when it is not found.
local function below_checkpoint(key, checkpoint_key, len)
  local checkpoint = redis.call('GET', checkpoint_key)
  if not checkpoint or string.sub(checkpoint, 1, 3) ~= 'v2:' then return nil end
  local want = {}
  for sha in string.gmatch(string.sub(checkpoint, 4), '[^,]+') do want[#want + 1] = sha end
  if #want == 0 then return nil end
  local shas, start, page = {}, 0, #want
  local last = math.min(len, search_cap)
  while start < last do
    local items = redis.call('LRANGE', key, start, math.min(start + page, last) - 1)
    if #items == 0 then break end
    for _, e in ipairs(items) do shas[#shas + 1] = redis.sha1hex(e) end
    budget = budget - #items
    for at = math.max(1, start - #want + 2), #shas - #want + 1 do
      local all = true
      for j = 1, #want do
        if shas[at + j - 1] ~= want[j] then all = false break end
      end
      if all then return at - 1 + #want end
    end
    start = start + #items
    page = 256
  end
  return nil
end

local function cut(key, keep)
  if keep == 0 then redis.call('DEL', key) else redis.call('LTRIM', key, 0, keep - 1) end
end

local out = {}
for k = 1, #KEYS / 2 do
  local key, checkpoint_key = KEYS[2 * k - 1], KEYS[2 * k]
  local limit, watched = tonumber(ARGV[3 + 2 * k]), ARGV[4 + 2 * k] == '1'
  local by_limit, by_age, state = 0, 0, 0
  local len = redis.call('LLEN', key)
  if budget <= 0 then
    state = 1
  elseif len > limit or (cutoff and len > 0) then
    local floor, before = 0, budget
    if watched then floor = below_checkpoint(key, checkpoint_key, len) end
    if not floor then
      state = 2
    else
      -- What the call had left before the search: a list that got this far makes progress
      -- even when its search spent the budget (the check above stops the lists after it).
      local allowance = math.max(before, min_progress)
      local examined = 0
      local keep = math.max(limit, floor)
      if len > keep then
        local n = math.min(len - keep, allowance)
        cut(key, len - n)
        by_limit, len, allowance = n, len - n, allowance - n
        if len > keep then state = 1 end
      end
      if state == 0 and cutoff and len > floor and allowance > 0 then
        local look = math.min(len - floor, age_chunk, allowance)
        -- From the oldest entry up, in pages (small first: usually the oldest is recent).
        local drop, page, stop = 0, 16, false
        while not stop and examined < look do
          local n = math.min(page, look - examined)
          local items = redis.call('LRANGE', key, -(examined + n), -(examined + 1))
          for i = #items, 1, -1 do
            local t = stamp(items[i])
            if t then
              if t < cutoff then drop = examined + #items - i + 1 else stop = true break end
            end
          end
          examined = examined + #items
          if #items < n then break end
          page = 256
        end
        if drop > 0 then
          cut(key, len - drop)
          by_age, len = drop, len - drop
          if drop == look and len > floor then state = 1 end
        end
      end
      budget = budget - by_limit - examined
    end
  end
  out[#out + 1] = {by_limit, by_age, state}
end
return out
