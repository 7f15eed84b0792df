-- `pft <command>`: validate's plan, ls, cp, cat, exit codes. Runs build/pft through the shell.
local check = require "check"

local T = {}

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs build/pft in the repository root with the shell-quoted argument string; returns output and exit code.
local function pft(args, env)
  local marker = "__pft_exit_code="
  local p = assert(io.popen(("cd %s && %s %s %s 2>&1; echo %s$?"):format(sh_quote(TEST_ROOT), env or "", sh_quote(TEST_PFT), args, marker)))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match(marker .. "(%d+)%s*$"))
  return (out:gsub(marker .. "%d+%s*$", "")), code
end

local function has(s, needle) check.truthy(s:find(needle, 1, true), s .. "\n-- lacks: " .. needle) end

function T.validate_prints_the_phases()
  local out, code = pft("validate recipes/sst2-gradual.lua train.epochs=1")
  check.eq(code, 0, "exit code: " .. out)
  check.truthy(out:match("\n1%s+0%-99%s+1%s+pooler, head%s+148,610"), "phase 1: " .. out)
  check.truthy(out:match("\n6%s+500%-%s+not run%s+layer%[1%-5%], pooler, head"), "phase 6 past the end: " .. out)
  has(out, "layer[4-5], pooler, head")
  has(out, "unfreeze embeddings")
  has(out, "all groups 0.0001")
  has(out, "peak optimizer state")
end

-- One plan: what `pft validate` prints is what `pft train` writes to plan.txt, for every shipped recipe
-- (small splits so that a step is quick; the run stops after its first step).
function T.validate_and_train_write_the_same_plan()
  local names = {}
  for l in io.popen(("ls %s/recipes"):format(sh_quote(TEST_ROOT))):lines() do names[#names + 1] = l:match("^(.+)%.lua$") end
  check.truthy(#names >= 8, "shipped recipes found: " .. #names)
  local small = "data.train.limit=96 data.dev.limit=16 ~data.test data.batch_size=16"
  for _, name in ipairs(names) do
    local out, code = pft(("validate %s %s"):format(name, small))
    check.eq(code, 0, name .. ": validate exit code: " .. out)
    local printed = out:match("\n\n(.*)$") or ""
    local dir = os.tmpname()
    os.remove(dir)
    local tout, tcode = pft(("train %s %s output.dir=%s train.log_every=1000"):format(name, small, sh_quote(dir)),
      "PFT_TEST_INTERRUPT_AT_STEP=1")
    check.eq(tcode, 130, name .. ": train stopped after step 1: " .. tout)
    local f = io.open(dir .. "/plan.txt")
    local written = f and f:read("*a") or ""
    if f then f:close() end
    check.truthy(#written > 0, name .. ": plan.txt written")
    check.eq(written, printed, name .. ": plan.txt is validate's plan")
    os.execute("rm -rf " .. sh_quote(dir))
  end
end

-- train.precision = "bf16" on a processor without bf16 GEMMs (PFT_CPU_BF16=none plays one): refused before
-- training, naming the key and what the processor lacks; with AVX512-BF16 and no AMX, that is what it uses.
function T.bf16_refused_where_the_processor_has_none()
  local out, code = pft("validate sst2 train.precision=bf16", "PFT_CPU_BF16=none")
  check.truthy(code ~= 0, "refused: " .. out)
  has(out, "train.precision")
  has(out, "neither AMX-BF16 nor AVX512-BF16")
  out, code = pft("validate sst2", "PFT_CPU_BF16=none")
  check.eq(code, 0, "fp32 needs nothing: " .. out)
  out, code = pft("validate sst2 train.precision=bf16", "PFT_CPU_BF16=avx512-bf16")
  if code == 0 then has(out, "precision: bf16 GEMMs (avx512)") else has(out, "neither AMX-BF16 nor AVX512-BF16") end
end

-- `pft train ... train.precision=bf16` end to end where the processor has bf16 GEMMs: trains, evaluates,
-- writes the precision into plan.txt.
function T.bf16_trains_through_the_command()
  local _, probe = pft("validate sst2 train.precision=bf16")
  if probe ~= 0 then print("  bf16: no bf16 GEMMs on this processor: skipped") return end
  local dir = os.tmpname()
  os.remove(dir)
  local out, code = pft(("train sst2 train.precision=bf16 data.train.limit=64 data.dev.limit=32 ~data.test data.batch_size=16 train.max_steps=3 train.eval_every=3 output.dir=%s"):format(sh_quote(dir)))
  check.eq(code, 0, "bf16 train: " .. out)
  local f = io.open(dir .. "/plan.txt")
  local plan = f and f:read("*a") or ""
  if f then f:close() end
  has(plan, "precision: bf16 GEMMs")
  has(out, "eval step 3 (epoch 1): acc ")
  os.execute("rm -rf " .. sh_quote(dir))
end

-- PFT_CPU_GEMM picks who computes fp32 GEMMs: a bad value is refused naming the variable and the choices;
-- openblas trains (the default, pft's AVX-512 GEMM where the processor has it, trains in every other test).
function T.cpu_gemm_variable()
  local out, code = pft("validate sst2", "PFT_CPU_GEMM=mkl")
  check.truthy(code ~= 0, "refused: " .. out)
  has(out, "PFT_CPU_GEMM=mkl")
  has(out, "expected auto, avx512 or openblas")
  local dir = os.tmpname()
  os.remove(dir)
  out, code = pft(("train sst2 data.train.limit=32 data.dev.limit=16 ~data.test data.batch_size=16 train.max_steps=2 train.eval_every=2 output.dir=%s"):format(sh_quote(dir)), "PFT_CPU_GEMM=openblas")
  check.eq(code, 0, "openblas train: " .. out)
  has(out, "eval step 2 (epoch 1): acc ")
  os.execute("rm -rf " .. sh_quote(dir))
end

-- Frozen weights' GEMM packings are kept between steps (core/ctx.h): training and evaluating give the same
-- numbers and the same model file with none kept (PFT_PACKED_MB=0), for LoRA (every base weight frozen) and
-- for gradual unfreezing (a kept layer unfrozen, trained, and evaluated again: the packing kept from before
-- its training must not be read). A bad value is refused naming the variable.
function T.packed_mb_variable()
  local out, code = pft("validate sst2", "PFT_PACKED_MB=lots")
  check.truthy(code ~= 0, "refused: " .. out)
  has(out, "PFT_PACKED_MB=lots")
  has(out, "expected a whole number of MB")
  local runs = {
    "sst2-lora data.train.limit=64 data.dev.limit=32 ~data.test data.batch_size=16 train.max_steps=4 train.eval_every=2",
    "sst2-gradual schedule.every=2 lr.unfreeze_warmup=1 data.train.limit=96 data.dev.limit=32 ~data.test data.batch_size=16 train.max_steps=6 train.eval_every=3",
  }
  for _, args in ipairs(runs) do
    local evals, models = {}, {}
    for i, env in ipairs({ "PFT_PACKED_MB=0", "" }) do
      local dir = os.tmpname()
      os.remove(dir)
      out, code = pft(("train %s output.dir=%s"):format(args, sh_quote(dir)), env)
      check.eq(code, 0, args .. " " .. env .. ": " .. out)
      evals[i] = {}
      for line in out:gmatch("eval step [^\n]*") do evals[i][#evals[i] + 1] = line end
      local f = io.open(dir .. "/model/model.safetensors", "rb")
      models[i] = f and f:read("*a")
      if f then f:close() end
      os.execute("rm -rf " .. sh_quote(dir))
    end
    check.truthy(#evals[1] >= 2, "evaluated: " .. out)
    check.eq(table.concat(evals[2], "\n"), table.concat(evals[1], "\n"), args .. ": evaluations with packings kept")
    check.truthy(models[1] and models[1] == models[2], args .. ": the same model file")
  end
end

-- Errors meant for users name their file, key or tensor, never a location inside pft's own modules;
-- PFT_TRACEBACK=1 shows those (and the traceback).
function T.errors_name_no_internal_path()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute(("mkdir -p %s && cp tests/fixtures/bert/tiny_seqcls/vocab.txt %s/ && echo '{}' > %s/config.json"):format(
    sh_quote(dir), sh_quote(dir), sh_quote(dir)))
  local out, code = pft("eval " .. sh_quote(dir) .. " tests/fixtures/train/tiny_dev.tsv")
  check.eq(code, 1, "exit code: " .. out)
  has(out, dir .. "/config.json: missing \"model_type\"")
  check.truthy(not out:find("%.lua:%d+:"), "no Lua source location: " .. out)
  local dbg = pft("eval " .. sh_quote(dir) .. " tests/fixtures/train/tiny_dev.tsv", "PFT_TRACEBACK=1")
  check.truthy(dbg:find("/pft/model%.lua:%d+:"), "PFT_TRACEBACK=1 shows the location: " .. dbg)
  has(dbg, "stack traceback")
  os.execute("rm -rf " .. sh_quote(dir))
  local cli = require "pft.cli"
  check.eq(cli.user_message("/usr/share/lua/5.1/pft/model.lua:12: /x/config.json: bad"), "/x/config.json: bad", "stripped")
  check.eq(cli.user_message("recipes/a.lua:3: data.train: bad"), "recipes/a.lua:3: data.train: bad", "a recipe's location kept")
  check.eq(cli.user_message("/home/me/pft/notamodule.lua:3: x"), "/home/me/pft/notamodule.lua:3: x", "only pft's modules")
end

-- A checkpoint head of another size: the message blames where the number of labels came from.
function T.head_size_mismatch_names_the_labels_source()
  local out, code = pft("validate sst2 model.name=tests/fixtures/bert/tiny_seqcls data.train.limit=64")
  check.eq(code, 1, "exit code: " .. out)
  has(out, "tensor 'classifier.weight' has shape [3, 32] but the training data's labels (0, 1) imply [2, 32] (2 labels)")
  check.truthy(not out:find("config.json implies", 1, true), "config.json not blamed: " .. out)
  out = pft("validate sst2 model.name=tests/fixtures/bert/tiny_seqcls data.train.limit=64 'task.labels={\"0\",\"1\"}'")
  has(out, "but task.labels imply [2, 32]")
end

-- schedule.custom from a recipe file: validate samples it at the eval points; a failing function fails
-- validate naming the step; an endless one is stopped by the sandbox's budget, naming the file.
function T.custom_schedule_in_validate()
  local path = os.tmpname() .. ".lua"
  local function write(body)
    local f = assert(io.open(path, "w"))
    f:write('return { base = "sst2", data = { train = { limit = 320 } }, train = { eval_every = 4 },\n' ..
      '  schedule = { custom = function(ctx) ' .. body .. ' end } }\n')
    f:close()
  end
  write('if ctx.step < 8 then return "head" end return { "top(1)", "pooler", "head" }')
  local out, code = pft("validate " .. sh_quote(path))
  check.eq(code, 0, "validate: " .. out)
  has(out, "schedule custom (schedule.custom)")
  check.truthy(out:find("\n1%s+0%-7%s+1%s+head%s"), out)
  check.truthy(out:find("\n2%s+8%-19%s+1%-2%s+layer%[5%], pooler, head%s.-schedule%.custom"), out)
  has(out, "schedule.custom sampled at the 5 evaluation points")
  write('if ctx.step >= 12 then error("no plan for step " .. ctx.step, 0) end return "head"')
  out, code = pft("validate " .. sh_quote(path))
  check.eq(code, 1, "failing function: " .. out)
  has(out, "schedule.custom at step 12: no plan for step 12")
  write('while true do end')
  out, code = pft("validate " .. sh_quote(path))
  check.eq(code, 1, "endless function: " .. out)
  has(out, "ran past its budget")
  os.remove(path)
end

function T.validate_fails_on_a_selector_that_matches_nothing()
  local out, code = pft("validate sst2 'schedule.rules={{at={epoch=1}, unfreeze=\"bert.encoder.nothing.*\"}}'")
  check.eq(code, 1, "exit code")
  has(out, "schedule.rules[1].unfreeze: selector 'bert.encoder.nothing.*' matches no parameter")
end

function T.ls_lists_shipped_recipes()
  local out, code = pft("ls")
  check.eq(code, 0, "exit code")
  for _, n in ipairs({ "sst2 ", "sst2-head ", "sst2-top2 ", "sst2-gradual ", "sst2-bitfit ", "sst2-full ", "sst2-llrd " }) do has(out, n) end
  has(out, "SST-2, BitFit")
end

function T.cp_copies_and_refuses_to_overwrite()
  local dest = os.tmpname() .. ".lua"
  local out, code = pft("cp sst2-head " .. sh_quote(dest))
  check.eq(code, 0, "exit code: " .. out)
  local f = assert(io.open(dest))
  local text = f:read("*a")
  f:close()
  has(text, 'base = "sst2"')
  out, code = pft("cp sst2-top2 " .. sh_quote(dest))
  os.remove(dest)
  check.eq(code, 1, "exit code when DEST exists")
  has(out, "exists; not overwriting it")
  out, code = pft("cp no-such " .. sh_quote(dest))
  check.eq(code, 2, "unknown recipe name")
end

function T.cat_round_trip()
  local out, code = pft("cat sst2-top2 optim.lr=3e-5")
  check.eq(code, 0, "exit code: " .. out)
  has(out, "lr = 3e-05")
  local name = os.tmpname() .. ".lua"
  local f = assert(io.open(name, "w"))
  f:write(out)
  f:close()
  local again, code2 = pft("cat " .. sh_quote(name))
  os.remove(name)
  check.eq(code2, 0, "exit code")
  check.eq(again:gsub("^[^\n]*\n", ""), out:gsub("^[^\n]*\n", ""), "cat of cat's output")
end

function T.exit_codes()
  local out, code = pft("frobnicate")
  check.eq(code, 2, "unknown subcommand")
  out, code = pft("validate")
  check.eq(code, 2, "missing argument")
  has(out, "usage: pft validate RECIPE")
  out, code = pft("cat sst2 --frob")
  check.eq(code, 2, "unknown option")
  has(out, "unknown option '--frob'")
  out, code = pft("cat sst2 optim.lrr=1")
  check.eq(code, 1, "recipe error")
  has(out, "override 'optim.lrr=1': unknown key 'optim.lrr' (did you mean 'optim.lr'?)")
  out, code = pft("cat tests/fixtures/recipes/unknown_key.lua")
  check.eq(code, 1, "recipe error in a file")
  has(out, "tests/fixtures/recipes/unknown_key.lua:5: unknown key 'optim.lrr'")
  out, code = pft("cat tests/fixtures/recipes/syntax.lua")
  check.eq(code, 3, "syntax error in a recipe")
  out, code = pft("train --help")
  check.eq(code, 0, "--help")
  has(out, "usage: pft train RECIPE")
end

return T
