-- AbstractRuntime for Neovim: waiting runs where the workflow is written.
--
--   require("abstractruntime").setup({})
--
-- starts `abstractruntime lsp` (which joins the project's daemon, starting it if needed) for
-- Python buffers in the workflow folders, shows the daemon's code lenses (runs waiting at each
-- node, start, retry), and adds :AbstractRuntimeRuns, :AbstractRuntimeAnswer, :AbstractRuntimeRetry and
-- :AbstractRuntimeFork. Works on Neovim 0.7.2
-- (vim.lsp.start_client) and newer. See docs/editors.md.

local M = {}

local defaults = {
  -- The command that joins the daemon. Extra flags (--data, --workflows) are added from below.
  cmd = { "abstractruntime", "lsp" },
  -- Workflow folders, relative to the working directory: buffers in them attach, and a daemon
  -- that `abstractruntime lsp` starts serves them.
  workflows = { "workflows" },
  data = nil, -- the daemon's data folder (default: the daemon's own, ./.abstractruntime)
  socket = nil, -- the daemon's socket (default: found from the data folder)
  -- Ask about every new prompt as it appears (vim.ui.select / vim.ui.input), without blocking.
  answer_prompts = true,
  -- How :AbstractRuntimeRuns shows runs: "quickfix" or "select" (vim.ui.select).
  runs_view = "quickfix",
  root_dir = nil, -- default: the working directory
}

M.config = vim.deepcopy(defaults)
M.client_id = nil

local function abspath(p)
  local full = vim.fn.fnamemodify(p, ":p"):gsub("/$", "")
  return full -- one value: gsub's count must not leak into argument lists
end

local function notify(msg, level)
  vim.notify("abstractruntime: " .. msg, level or vim.log.levels.INFO)
end

local function in_workflow_folder(path)
  local dir = vim.fn.fnamemodify(path, ":p:h")
  for _, w in ipairs(M.config.workflows) do
    if dir == abspath(w) then
      return true
    end
  end
  return false
end

local function client()
  return M.client_id and vim.lsp.get_client_by_id(M.client_id) or nil
end

-- A request to the daemon over the editor's connection; `cb(err, result)` runs on the main loop.
function M.request(method, params, cb)
  local c = client()
  if not c then
    notify("not connected (open a workflow file, or call require('abstractruntime').start())", vim.log.levels.WARN)
    return
  end
  local function handler(err, result)
    vim.schedule(function()
      cb(err, result)
    end)
  end
  if vim.fn.has("nvim-0.11") == 1 then
    c:request(method, params, handler, 0) -- 0.11 deprecates the dot call
  else
    c.request(method, params, handler, 0)
  end
end

-- Ask for the current buffer's lenses, once the server has answered `initialize`: on 0.7.2 a
-- refresh sent earlier fails and leaves the buffer marked as refreshing, so none follows.
local function lens_refresh()
  local c = client()
  if c and c.server_capabilities and c.server_capabilities.codeLensProvider then
    vim.lsp.codelens.refresh()
  end
end

local function refresh_lenses()
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.lsp.buf_is_attached(buf, M.client_id) then
      vim.api.nvim_buf_call(buf, lens_refresh)
    end
  end
end

M.refresh_lenses = refresh_lenses

local function err_text(err)
  return type(err) == "table" and (err.message or vim.inspect(err)) or tostring(err)
end

-- Answering -----------------------------------------------------------------------------------

local OTHER = "Something else..."

-- Ask the person for an answer to `run` (a run summary, or the prompt info the daemon sent),
-- then resume it. Choices go through vim.ui.select; free text through vim.ui.input.
function M.answer_run(run, done)
  done = done or function() end
  local prompt = run.prompt or "Answer"
  local function resume(text)
    if text == nil or text == "" then
      return done(false)
    end
    M.request("runtime/resume", { run_id = run.run_id, payload = { text = text }, wait_key = run.wait_key }, function(err, res)
      if err then
        notify(run.run_id .. ": " .. err_text(err), vim.log.levels.WARN)
        return done(false)
      end
      notify(run.run_id .. " -> " .. res.state.status)
      refresh_lenses()
      done(true)
    end)
  end
  local choices = run.choices or {}
  if #choices == 0 then
    return vim.ui.input({ prompt = prompt .. " " }, resume)
  end
  local items = vim.deepcopy(choices)
  if run.allow_free_text ~= false then
    table.insert(items, OTHER)
  end
  vim.ui.select(items, { prompt = prompt }, function(choice)
    if choice == OTHER then
      vim.ui.input({ prompt = prompt .. " " }, resume)
    else
      resume(choice)
    end
  end)
end

-- The daemon's window/showMessageRequest for a new prompt. Neovim's own handler blocks (an
-- inputlist); this one returns at once and asks through vim.ui on the next loop turn.
local function on_prompt(_, params)
  local info = params and params.abstractruntime
  if info then
    vim.schedule(function()
      M.answer_run(info)
    end)
  elseif params then
    vim.schedule(function()
      notify(params.message)
    end)
  end
  return vim.NIL
end

local function waiting_runs(cb, filter)
  M.request("runtime/runs", { status = "waiting", limit = 1000 }, function(err, res)
    if err then
      return notify(err_text(err), vim.log.levels.ERROR)
    end
    local out = {}
    for _, r in ipairs(res.runs) do
      if not filter or filter(r) then
        table.insert(out, r)
      end
    end
    cb(out)
  end)
end

local function describe(r)
  local s = string.format("[%s] %s %s at %s", r.status, r.workflow_id, r.run_id, r.current_node)
  if r.prompt then
    s = s .. " ? " .. r.prompt
  end
  if r.choices and #r.choices > 0 then
    s = s .. " [" .. table.concat(r.choices, "/") .. "]"
  end
  return s
end

local function pick_and_answer(runs)
  if #runs == 0 then
    return notify("no run is waiting for an answer")
  end
  if #runs == 1 then
    return M.answer_run(runs[1])
  end
  vim.ui.select(runs, { prompt = "Answer which run?", format_item = describe }, function(r)
    if r then
      M.answer_run(r)
    end
  end)
end

-- The node whose code lens sits at or above the cursor line, in a workflow buffer.
local function node_under_cursor()
  local lenses = vim.lsp.codelens.get(vim.api.nvim_get_current_buf()) or {}
  local line = vim.api.nvim_win_get_cursor(0)[1] - 1
  local best
  for _, l in ipairs(lenses) do
    local args = l.command and l.command.arguments and l.command.arguments[1]
    if type(args) == "table" and args.node_id and l.range.start.line <= line then
      if not best or l.range.start.line > best.range.start.line then
        best = l
      end
    end
  end
  return best and best.command.arguments[1] or nil
end

-- :AbstractRuntimeAnswer [run_id]: the given run, the run under the cursor (quickfix list of
-- :AbstractRuntimeRuns, or the node function under the cursor), else one picked from a list.
function M.answer(run_id)
  if run_id == nil or run_id == "" then
    if vim.bo.buftype == "quickfix" then
      local item = vim.fn.getqflist()[vim.fn.line(".")]
      -- user_data needs Neovim 0.8; the text (see `describe`) carries the id on every version.
      run_id = item and ((type(item.user_data) == "table" and item.user_data.run_id) or item.text:match("^%[%a+%] %S+ (%S+) at "))
    end
  end
  if run_id and run_id ~= "" then
    return waiting_runs(pick_and_answer, function(r)
      return r.run_id == run_id
    end)
  end
  local node = node_under_cursor()
  if node then
    return waiting_runs(pick_and_answer, function(r)
      return r.workflow_id == node.workflow_id and r.current_node == node.node_id
    end)
  end
  waiting_runs(pick_and_answer, function(r)
    return r.prompt ~= nil
  end)
end

-- :AbstractRuntimeRuns: every run, waiting first, in the quickfix list (or vim.ui.select).
function M.runs()
  M.request("workflows/list", vim.empty_dict(), function(err, wl)
    if err then
      return notify(err_text(err), vim.log.levels.ERROR)
    end
    local sources = {}
    for _, w in ipairs(wl.workflows) do
      sources[w.workflow_id] = w.source
    end
    M.request("runtime/runs", { limit = 1000 }, function(err2, res)
      if err2 then
        return notify(err_text(err2), vim.log.levels.ERROR)
      end
      local runs = res.runs
      table.sort(runs, function(a, b)
        local wa, wb = a.status == "waiting", b.status == "waiting"
        if wa ~= wb then
          return wa
        end
        return a.updated_at > b.updated_at
      end)
      if M.config.runs_view == "select" then
        return vim.ui.select(runs, { prompt = "Runs", format_item = describe }, function(r)
          if r and r.status == "waiting" then
            M.answer_run(r)
          end
        end)
      end
      local items = {}
      for _, r in ipairs(runs) do
        table.insert(items, {
          filename = sources[r.workflow_id],
          lnum = 1,
          text = describe(r),
          user_data = { run_id = r.run_id },
        })
      end
      vim.fn.setqflist({}, " ", { title = "AbstractRuntime runs", items = items })
      vim.cmd("copen")
    end)
  end)
end

-- Starting the client ---------------------------------------------------------------------------

-- Retry and fork -----------------------------------------------------------------------------------
-- :AbstractRuntimeRetry RUN_ID runs a failed run again from its failed node (after the fix is
-- saved: the daemon reloads it). :AbstractRuntimeFork RUN_ID [SEQ] makes a new run from the
-- run's state after ledger record SEQ (default: its last) and says the new run's id.
function M.retry(run_id, done)
  done = done or function() end
  M.request("runtime/retry", { run_id = run_id }, function(err, res)
    if err then
      notify(run_id .. ": " .. err_text(err), vim.log.levels.WARN)
      return done(nil)
    end
    notify(run_id .. " retried -> " .. res.state.status)
    refresh_lenses()
    done(res.state)
  end)
end

function M.fork(run_id, seq, done)
  done = done or function() end
  local params = { run_id = run_id }
  if seq then
    params.seq = seq
  end
  M.request("runtime/fork", params, function(err, res)
    if err then
      notify(run_id .. ": " .. err_text(err), vim.log.levels.WARN)
      return done(nil)
    end
    notify("forked " .. run_id .. " into " .. res.run_id .. " -> " .. res.state.status)
    refresh_lenses()
    done(res)
  end)
end

function M.start()
  if client() then
    return M.client_id
  end
  local cmd = vim.deepcopy(M.config.cmd)
  if M.config.data then
    vim.list_extend(cmd, { "--data", abspath(M.config.data) })
  end
  if M.config.socket then
    vim.list_extend(cmd, { "--socket", M.config.socket })
  end
  for _, w in ipairs(M.config.workflows) do
    vim.list_extend(cmd, { "--workflows", abspath(w) })
  end
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.workspace = caps.workspace or {}
  caps.workspace.codeLens = { refreshSupport = true }
  caps.window = caps.window or {}
  caps.window.workDoneProgress = true
  M.client_id = vim.lsp.start_client({
    name = "abstractruntime",
    cmd = cmd,
    root_dir = M.config.root_dir or vim.fn.getcwd(),
    capabilities = caps,
    init_options = { answerPrompts = M.config.answer_prompts },
    handlers = {
      ["window/showMessageRequest"] = on_prompt,
      ["workspace/codeLens/refresh"] = function()
        vim.schedule(refresh_lenses)
        return vim.NIL
      end,
      ["abstractruntime/promptWithdrawn"] = function() end,
    },
    on_attach = function(_, bufnr)
      vim.api.nvim_buf_call(bufnr, lens_refresh)
    end,
  })
  -- A lens's "answer" is answered here, in the editor's own UI, not by the daemon.
  vim.lsp.commands["abstractruntime.answer"] = function(command)
    local a = command.arguments and command.arguments[1]
    if type(a) == "table" and a.node_id then
      waiting_runs(pick_and_answer, function(r)
        return r.workflow_id == a.workflow_id and r.current_node == a.node_id
      end)
    else
      M.answer(type(a) == "string" and a or nil)
    end
  end
  return M.client_id
end

function M.attach(bufnr)
  local id = M.start()
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  local group = vim.api.nvim_create_augroup("abstractruntime", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = "python",
    callback = function(ev)
      if in_workflow_folder(vim.api.nvim_buf_get_name(ev.buf)) then
        M.attach(ev.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "BufEnter", "InsertLeave", "BufWritePost" }, {
    group = group,
    pattern = "*.py",
    callback = function(ev)
      if M.client_id and vim.lsp.buf_is_attached(ev.buf, M.client_id) then
        lens_refresh()
      end
    end,
  })
  vim.api.nvim_create_user_command("AbstractRuntimeRuns", function()
    M.runs()
  end, { desc = "AbstractRuntime: list runs, waiting first" })
  vim.api.nvim_create_user_command("AbstractRuntimeAnswer", function(o)
    M.answer(o.args)
  end, { nargs = "?", desc = "AbstractRuntime: answer the run under the cursor, or pick one" })
  vim.api.nvim_create_user_command("AbstractRuntimeRetry", function(o)
    M.retry(o.fargs[1])
  end, { nargs = 1, desc = "AbstractRuntime: run a failed run again from its failed node" })
  vim.api.nvim_create_user_command("AbstractRuntimeFork", function(o)
    M.fork(o.fargs[1], tonumber(o.fargs[2]))
  end, { nargs = "+", desc = "AbstractRuntime: a new run from RUN_ID's state after record SEQ (default: last)" })
end

return M
