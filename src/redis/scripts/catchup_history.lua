-- Catch-up's history read (src/bridge/catchup/walk.rs): reads a history newest first, atomically (so writers
-- cannot shift entries between pages), page by page until a sequence of SHA-1s has been read.
-- KEYS[1] the history LIST.
-- ARGV[1] size cap (bytes), ARGV[2] page size, ARGV[3..] the SHA-1 sequence to read down to
--   (all of the history when none is given).
-- Returns per entry its SHA-1, then the entry itself, or, for an entry over the cap,
--   {length, first 512 bytes} so it never has to cross the wire.
local cap, page = tonumber(ARGV[1]), tonumber(ARGV[2])
local want = {}
for i = 3, #ARGV do want[#want + 1] = ARGV[i] end
local shas, out, start = {}, {}, 0
local function found()
  if #want == 0 then return false end
  for at = 1, #shas - #want + 1 do
    local all = true
    for j = 1, #want do
      if shas[at + j - 1] ~= want[j] then all = false break end
    end
    if all then return true end
  end
  return false
end
while true do
  local items = redis.call('LRANGE', KEYS[1], start, start + page - 1)
  for _, e in ipairs(items) do
    local sha = redis.sha1hex(e)
    shas[#shas + 1] = sha
    out[#out + 1] = sha
    if #e > cap then
      out[#out + 1] = {#e, string.sub(e, 1, 512)}
    else
      out[#out + 1] = e
    end
  end
  if #items < page or found() then
    return out
  end
  start = start + page
end
