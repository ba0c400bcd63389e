from featscope.cli import app

app(prog_name="featscope")
