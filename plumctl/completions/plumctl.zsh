#compdef plumctl

_plumctl_completion() {
  setopt local_options rc_quotes  # typer writes ' in help texts as ''
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _PLUMCTL_COMPLETE=complete_zsh plumctl)
}

compdef _plumctl_completion plumctl

# first TAB when autoloaded from $fpath (click's loadautofunc branch, missing in typer's)
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _plumctl_completion "$@"
fi
