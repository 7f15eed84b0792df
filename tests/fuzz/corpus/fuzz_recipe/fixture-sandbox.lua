-- test fixture: recipes cannot reach the operating system (line 3)
local model = "all-MiniLM-L6-v2"
os.execute("echo escaped")
return { model = { name = model } }
