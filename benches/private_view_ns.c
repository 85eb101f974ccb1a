/* The kernel cost of the private view alone, without Python or plugbox: fork + _exit + wait
 * (mode 0), plus three open_tree clones, unshare(CLONE_NEWNS) and MS_REC|MS_SLAVE (mode 1),
 * plus the three move_mounts plugbox makes (mode 2). Prints median, p10, p90 in ms.
 *   gcc -O2 -o /tmp/pv benches/private_view_ns.c && sudo /tmp/pv 0 400 && sudo /tmp/pv 2 400
 * Mode 2 mounts a file over /etc/passwd and /etc/group in the child's namespace only. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <sched.h>
#include <time.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/mount.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int n=atoi(argv[2]);
  int fs=syscall(SYS_fsopen,"proc",FSOPEN_CLOEXEC);
  syscall(SYS_fsconfig,fs,FSCONFIG_SET_STRING,"hidepid","invisible",0);
  syscall(SYS_fsconfig,fs,FSCONFIG_SET_STRING,"subset","pid",0);
  syscall(SYS_fsconfig,fs,FSCONFIG_CMD_CREATE,0,0,0);
  int mfd=syscall(SYS_fsmount,fs,FSMOUNT_CLOEXEC,MOUNT_ATTR_RDONLY|MOUNT_ATTR_NOSUID|MOUNT_ATTR_NODEV|MOUNT_ATTR_NOEXEC);
  int pw=open("/etc/hostname",O_PATH); /* any regular file */
  double *t=malloc(n*sizeof(double));
  for(int i=0;i<n;i++){
    double s=now();
    pid_t p=fork();
    if(p==0){
      if(mode>=1){
        int a=syscall(SYS_open_tree,mfd,"",OPEN_TREE_CLONE|AT_EMPTY_PATH|OPEN_TREE_CLOEXEC);
        int b=syscall(SYS_open_tree,pw,"",OPEN_TREE_CLONE|AT_EMPTY_PATH|OPEN_TREE_CLOEXEC);
        int c=syscall(SYS_open_tree,pw,"",OPEN_TREE_CLONE|AT_EMPTY_PATH|OPEN_TREE_CLOEXEC);
        if(unshare(CLONE_NEWNS))_exit(3);
        if(mount(0,"/",0,MS_REC|MS_SLAVE,0))_exit(4);
        if(mode>=2){
          if(syscall(SYS_move_mount,a,"",AT_FDCWD,"/proc",MOVE_MOUNT_F_EMPTY_PATH))_exit(5);
          if(syscall(SYS_move_mount,b,"",AT_FDCWD,"/etc/passwd",MOVE_MOUNT_F_EMPTY_PATH))_exit(6);
          if(syscall(SYS_move_mount,c,"",AT_FDCWD,"/etc/group",MOVE_MOUNT_F_EMPTY_PATH))_exit(7);
        }
      }
      _exit(0);
    }
    int st; waitpid(p,&st,0); if(st)printf("st=%x\n",st);
    t[i]=now()-s;
  }
  qsort(t,n,sizeof(double),cmp);
  printf("mode %d: median %.3f ms p10 %.3f p90 %.3f\n",mode,t[n/2],t[n/10],t[n*9/10]);
}
