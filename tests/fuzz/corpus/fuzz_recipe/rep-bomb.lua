return { name = string.rep("ab", 1e9) }
