LJ
return {}