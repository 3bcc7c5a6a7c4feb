-- Argo CD health check for cellos.dev/v1 Formation
-- (argocd-cm key resource.customizations.health.cellos.dev_Formation).
--
--   Healthy      the formation Succeeded
--   Degraded     it Failed or was Cancelled, or the operator stalled on it
--                (Stalled=True: InvalidSpec, TakeoverRefused)
--   Progressing  anything else: Pending, Running, or no phase yet while it
--                awaits admission, the publishing of its created event, or
--                the stream
--
-- Cancelled is Degraded rather than Suspended: a cancelled formation never
-- resumes, and kstatus (Flux, kubectl) calls it Failed. See docs/gitops.md.

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

local phase = status.phase
local stalled = condition("Stalled", "True")

if stalled ~= nil then
  return { status = "Degraded", message = say(stalled, stalled.reason) }
end
if phase == "Failed" or phase == "Cancelled" then
  return { status = "Degraded", message = "Phase " .. phase }
end
if phase == "Succeeded" then
  return { status = "Healthy", message = say(condition("Complete", "True"), "Phase Succeeded") }
end

-- On its way. Say the most telling thing: a failed publish, a degraded run,
-- what it waits for, or that it runs.
local why = condition("Published", "False")
  or condition("Degraded", "True")
  or condition("Reconciling", "True")
  or condition("Ready", "True")
return { status = "Progressing", message = say(why, "Waiting for the cellos operator to report status") }
