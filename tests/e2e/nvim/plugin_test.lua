-- Driven by tests/e2e/test_neovim.py: Neovim headless, the plugin, a real daemon.
-- The "person" is scripted: vim.ui.select and vim.ui.input answer from queues.
-- Everything observed goes to $AR_OUT as JSON; the Python test asserts on it.

local out = { steps = {} }
local flows = os.getenv("AR_FLOWS")

local function step(name)
  table.insert(out.steps, name)
end

local function finish()
  vim.fn.writefile({ vim.fn.json_encode(out) }, os.getenv("AR_OUT"))
  vim.cmd("qa!")
end

local answers = { select = {}, input = {} }
vim.ui.select = function(items, opts, on_choice)
  local want = table.remove(answers.select, 1)
  for _, it in ipairs(items) do
    local label = type(it) == "table" and (opts.format_item and opts.format_item(it) or it.run_id) or it
    if label == want or (type(it) == "table" and it.run_id == want) then
      return on_choice(it)
    end
  end
  on_choice(nil)
end
vim.ui.input = function(_, on_confirm)
  on_confirm(table.remove(answers.input, 1))
end

local function wait(what, ms, cond)
  if not vim.wait(ms, cond, 20) then
    error("timed out waiting for " .. what)
  end
end

-- The daemon's answer to a request, synchronously (the tests' own reads, not the plugin's).
local function call(ar, method, params)
  local got, err
  ar.request(method, params, function(e, r)
    err, got = e, r
  end)
  wait(method, 10000, function()
    return got ~= nil or err ~= nil
  end)
  if err then
    error(method .. ": " .. vim.inspect(err))
  end
  return got
end

local function lens_at(pattern)
  local line
  for i, l in ipairs(vim.api.nvim_buf_get_lines(0, 0, -1, false)) do
    if l:find(pattern, 1, true) then
      line = i - 1
      break
    end
  end
  for _, lens in ipairs(vim.lsp.codelens.get(vim.api.nvim_get_current_buf()) or {}) do
    if lens.range.start.line == line and lens.command then
      return lens.command.title
    end
  end
  return nil
end

local function status_of(ar, run_id)
  return call(ar, "runtime/state", { run_id = run_id }).state
end

local ok, err = pcall(function()
  vim.cmd("filetype on")
  local ar = require("abstractruntime")
  ar.setup({
    cmd = vim.fn.json_decode(os.getenv("AR_CMD")),
    workflows = { os.getenv("AR_WORKFLOWS") },
    answer_prompts = true,
  })
  vim.cmd("edit " .. flows)
  wait("the client to attach", 30000, function()
    return ar.client_id ~= nil and vim.lsp.buf_is_attached(0, ar.client_id)
  end)
  step("attached")
  wait("the ask node's lens", 20000, function()
    ar.refresh_lenses()
    return lens_at("def _ask(") == "1 waiting - answer"
  end)
  out.lens_before = lens_at("def _ask(")
  step("lens before")

  -- :AbstractRuntimeRuns lists the runs, waiting first, in the quickfix list.
  vim.cmd("AbstractRuntimeRuns")
  wait("the quickfix list", 10000, function()
    return #vim.fn.getqflist() >= 3
  end)
  out.runs = {}
  for _, item in ipairs(vim.fn.getqflist()) do
    table.insert(out.runs, item.text)
  end
  step("runs listed")

  -- Answer the first waiting run with a choice, from the quickfix line under the cursor.
  local run_choice = os.getenv("AR_RUN_CHOICE")
  vim.cmd("copen")
  for i, item in ipairs(vim.fn.getqflist()) do
    if item.text:find(run_choice, 1, true) then
      vim.api.nvim_win_set_cursor(0, { i, 0 })
    end
  end
  answers.select = { "yes" }
  vim.cmd("AbstractRuntimeAnswer")
  wait("the choice to resume the run", 10000, function()
    return status_of(ar, run_choice).status == "completed"
  end)
  out.choice_output = status_of(ar, run_choice).output
  step("answered with a choice")

  -- Free text: a run whose prompt has no choices, named on the command line.
  local run_text = os.getenv("AR_RUN_TEXT")
  answers.input = { "Ada" }
  vim.cmd("AbstractRuntimeAnswer " .. run_text)
  wait("the free text to resume the run", 10000, function()
    return status_of(ar, run_text).status == "completed"
  end)
  out.text_output = status_of(ar, run_text).output
  step("answered with free text")

  -- Fork the free-text run after its answer was recorded: a new run, its ledger naming its origin.
  local before = #call(ar, "runtime/runs", { limit = 1000 }).runs
  local answered_seq
  for _, r in ipairs(call(ar, "runtime/ledger", { run_id = run_text }).records) do
    if type(r.result) == "table" and r.result.resumed then
      answered_seq = r.seq
    end
  end
  vim.cmd("AbstractRuntimeFork " .. run_text .. " " .. answered_seq)
  wait("the fork", 10000, function()
    return #call(ar, "runtime/runs", { limit = 1000 }).runs == before + 1
  end)
  local runs = call(ar, "runtime/runs", { limit = 1000 }).runs
  local forked = runs[#runs]
  -- Listed once stored, before its first tick ends: wait for it to finish.
  wait("the fork to finish", 10000, function()
    return status_of(ar, forked.run_id).status == "completed"
  end)
  out.fork_origin = call(ar, "runtime/ledger", { run_id = forked.run_id }).records[1].result.forked.run_id
  out.fork_status = status_of(ar, forked.run_id).status
  step("forked")

  -- A new prompt while the editor is open: the plugin's handler must not block.
  answers.select = { "no" }
  local started = call(ar, "runtime/start", { workflow_id = "ask" })
  wait("the prompt to be answered", 10000, function()
    return status_of(ar, started.run_id).status == "completed"
  end)
  out.prompt_output = status_of(ar, started.run_id).output
  step("answered a prompt")

  vim.cmd("wincmd p")
  vim.cmd("buffer " .. vim.fn.bufnr(flows))
  wait("the ask node's lens to drop", 10000, function()
    ar.refresh_lenses()
    return lens_at("def _ask(") == "0 waiting"
  end)
  out.lens_after = lens_at("def _ask(")
  step("lens after")
end)
if not ok then
  out.error = tostring(err)
end
finish()
