/*
 * stepd_conf.h — `stepd --config FILE`: an INI file whose keys are stepd's long options.
 * The file's settings are placed before the command line's, so flags override it.
 */
#ifndef STEPD_CONF_H
#define STEPD_CONF_H

/*
 * Finds --config FILE (or --config=FILE) in argv, reads FILE (keys at the top or in a
 * [stepd] section, each the name of a long option in allowed, NULL-terminated) and
 * rewrites *argcp and *argvp as: argv[0], --key value ..., the remaining arguments.
 * Returns 0 (also when there is no --config), or STEP_EINVAL / STEP_ESYS with errbuf
 * naming the file and line. The new vector lives until stepd_conf_free().
 */
int stepd_conf_expand(
    int *argcp, char ***argvp, const char *const *allowed, char *errbuf, size_t errlen);
void stepd_conf_free(void);

#endif
