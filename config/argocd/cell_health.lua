-- Argo CD health check for cellos.dev/v1 Cell
-- (argocd-cm key resource.customizations.health.cellos.dev_Cell).
--
--   Healthy      Destroyed with outcome succeeded
--   Degraded     Destroyed with any other outcome, or none
--   Progressing  Pending or Running, or no state yet

local status = obj.status or {}

-- The condition of this type when its status is want, else nil.
local function condition(type, want)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == type and c.status == want then
      return c
    end
  end
  return nil
end

-- The condition's message, else fallback.
local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if status.state == "Destroyed" then
  if status.outcome == "succeeded" then
    return { status = "Healthy", message = say(condition("Ready", "True"), "Destroyed, outcome succeeded") }
  end
  local message = say(condition("Stalled", "True"), "Destroyed, outcome " .. (status.outcome or "unknown"))
  if status.exitCode ~= nil then
    message = message .. " (exit code " .. status.exitCode .. ")"
  end
  return { status = "Degraded", message = message }
end

local why = condition("Reconciling", "True") or condition("Ready", "True")
return { status = "Progressing", message = say(why, "Waiting for the cellos operator to report status") }
